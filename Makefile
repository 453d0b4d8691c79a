# The two commands of the quick start, and a few for working on loom.
.PHONY: demo test build clean bench

LUA_ENV = LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;" LUA_CPATH="$(CURDIR)/build/?.so;;"

demo: build
	cd examples && $(LUA_ENV) lua5.4 demo.lua

test:
	bash scripts/test.sh

build:
	bash scripts/deps.sh
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j2

bench: build
	bash bench/run.sh

clean:
	rm -rf build build-asan build-tsan build-bench
