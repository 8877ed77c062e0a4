PREFIX ?= /usr/local
DESTDIR ?=
PROFILE ?= release

# Build the daemon, the CLI and the C ABI (libcidcache.so / .a).
all:
	cargo build --profile $(PROFILE) -p cidcache-ffi -p cidcache --bins

# Install them with the headers, pkg-config and CMake files (see scripts/install.sh).
install:
	scripts/install.sh --prefix "$(PREFIX)" --destdir "$(DESTDIR)" --profile $(PROFILE)

# Every check and test (what CI runs).
test:
	scripts/test.sh

.PHONY: all install test
