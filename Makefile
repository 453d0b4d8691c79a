# Shortcuts for those who have make: each runs the script the README names,
# which work on a machine without make too.
.PHONY: demo test build clean bench

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

build:
	bash scripts/build.sh

bench: build
	bash scripts/deps.sh test
	bash bench/run.sh

clean:
	rm -rf build build-asan build-tsan build-bench
