# Impetus build and test entry points. `make run` and `make test` are the two commands a
# newcomer needs; both work on a fresh Debian machine with Go installed.

GO        ?= go
BIN       := bin/impetus
DATA      ?= ./data
CONFIG    ?= etc/impetus.conf
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X impetus/internal/modules/version.Version=$(VERSION)
FUZZTIME  ?= 10s

# Fuzz targets: package:function, each run for FUZZTIME by `make test` and longer by `make fuzz`.
FUZZ_TARGETS := \
	./internal/xmlstream:FuzzDecoder \
	./internal/xmlstream:FuzzElementRoundTrip \
	./internal/config:FuzzParse \
	./internal/sasl:FuzzPlain \
	./internal/sasl:FuzzDigestMD5 \
	./internal/sasl:FuzzSCRAM \
	./internal/s2s:FuzzDialback \
	./internal/jidutil:FuzzJID \
	./internal/c2s:FuzzNegotiate \
	./internal/httpd:FuzzSplitter

.PHONY: build run test test-deps unit integration fuzz fuzz-brief bench vet clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/impetus

run: build
	mkdir -p $(DATA)
	./$(BIN) serve --config $(CONFIG) --data $(DATA)

test-deps:
	./scripts/test-deps.sh
	./scripts/browser-deps.sh
	./scripts/peers.sh
	./scripts/postgres.sh > .postgres.env

test: test-deps build vet
	. ./.postgres.env; export IMPETUS_TEST_POSTGRES; \
	$(GO) test -race -count=1 ./internal/... && \
	IMPETUS_BIN=$(CURDIR)/$(BIN) $(GO) test -p 1 -count=1 -timeout 15m ./test/...
	$(MAKE) fuzz-brief FUZZTIME=$(FUZZTIME)

vet:
	$(GO) vet ./...

# go test -fuzz sometimes ends a healthy run with "context deadline exceeded" at its own time
# limit, writing no failing input; such a run is tried once more. A real finding always writes
# its input under testdata/fuzz and fails.
fuzz-brief:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		out=$$($(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$pkg 2>&1); rc=$$?; \
		echo "$$out"; \
		if [ $$rc -ne 0 ]; then \
			if echo "$$out" | grep -q "context deadline exceeded" && ! echo "$$out" | grep -q "Failing input written"; then \
				echo "fuzz $$fn: the fuzzing engine timed out at its deadline; running it again"; \
				$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
			else exit 1; fi; \
		fi; \
	done

fuzz:
	$(MAKE) fuzz-brief FUZZTIME=10m

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./internal/xmlstream ./internal/stanza ./internal/c2s

# Side-by-side load test against Debian's ejabberd and Prosody (scripts/bench-peers.sh): about
# ten minutes; writes its table into docs/performance.md. Run as root (installs the peers).
.PHONY: bench-peers
bench-peers:
	./scripts/bench-peers.sh

clean:
	rm -rf bin .postgres.env

# The bounded soak test (test/soak): thousands of sessions with churn, then a check that the
# server's goroutines and heap return to their baseline. Minutes long, so not part of `make test`.
SOAK_SESSIONS ?= 3000
SOAK_DURATION ?= 2m
.PHONY: soak
soak: build
	IMPETUS_BIN=$(CURDIR)/$(BIN) SOAK_SESSIONS=$(SOAK_SESSIONS) SOAK_DURATION=$(SOAK_DURATION) \
	$(GO) test -tags soak -count=1 -timeout 20m -v -run '^TestSoak$$' ./test/soak/

# A three-node cluster on loopback (embedded NATS, shared PostgreSQL); see docs/cluster.md.
.PHONY: cluster-demo
cluster-demo: build
	./scripts/cluster-demo.sh
