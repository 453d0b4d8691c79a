-- The seed's thumbnail, on worker threads: CPU-heavy numeric work on a
-- (fake) image, rows spread over the workers with loom.thread.map, while
-- the loop stays free to tick. The result is checked against the same work
-- done in this state.
local loom = require "loom"

local W, H, SCALE = 384, 256, 8 -- a 384x256 image, made 48x32

-- A deterministic "photo": a few smooth gradients and rings, 0..255.
local function pixel(x, y)
  local r = math.sqrt((x - W / 2) ^ 2 + (y - H / 2) ^ 2)
  return math.floor((math.sin(r / 9) * 0.5 + 0.5) * 200 + (x * 55) / W) % 256
end

-- One thumbnail row: a 3x3 blur of the source, then a box filter over each
-- SCALE x SCALE block. Every source pixel is computed here, so a row is
-- real work (and needs nothing but its arguments and `pixel`).
local function thumb_row(ty)
  local out = {}
  for tx = 0, W // SCALE - 1 do
    local sum = 0
    for y = ty * SCALE, ty * SCALE + SCALE - 1 do
      for x = tx * SCALE, tx * SCALE + SCALE - 1 do
        local b = 0
        for dy = -1, 1 do
          for dx = -1, 1 do
            b = b + pixel(math.max(0, math.min(W - 1, x + dx)), math.max(0, math.min(H - 1, y + dy)))
          end
        end
        sum = sum + b / 9
      end
    end
    out[#out + 1] = math.floor(sum / (SCALE * SCALE) + 0.5)
  end
  return out
end

loom.run(function()
  local rows = {}
  for ty = 0, H // SCALE - 1 do rows[#rows + 1] = ty end

  local ticks = 0
  local ticker = loom.spawn(function()
    while true do loom.sleep(0.01); ticks = ticks + 1 end
  end)

  local t0 = loom.now()
  local thumb = loom.thread.map(rows, thumb_row, { chunk = 2 })
  local threaded = loom.now() - t0
  ticker:cancel()

  t0 = loom.now()
  local expected = {}
  for i, ty in ipairs(rows) do expected[i] = thumb_row(ty) end
  local single = loom.now() - t0

  for i = 1, #rows do
    assert(#thumb[i] == W // SCALE, "a full row")
    for j = 1, #thumb[i] do assert(thumb[i][j] == expected[i][j], "same pixels as in one state") end
  end
  print(("%dx%d -> %dx%d on %d workers in %.2f s (one state: %.2f s); the loop ticked %d times meanwhile")
    :format(W, H, W // SCALE, H // SCALE, loom.thread.stats().size, threaded, single, ticks))
  assert(ticks > 0, "the loop kept running")
  print(("thumbnail %dx%d matches the single-state result"):format(W // SCALE, H // SCALE))
end)
