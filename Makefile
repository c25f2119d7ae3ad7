# fleetd — `make test` is the one test command (CI runs it via .ci/run).
GO        ?= go
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS      = ./...

.PHONY: test deps fmt-check tidy vet staticcheck rules unit cluster fuzz model run build bench soak cost clean

test: deps fmt-check tidy vet staticcheck rules unit cluster fuzz

# deps installs the real servers the integration tests talk to, when missing.
deps:
	@scripts/ensure-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# tidy fails when go.mod or go.sum is not what `go mod tidy` would write.
tidy:
	$(GO) mod tidy -diff

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(STATICCHECK) $(PKGS)

# rules checks the shipped alert rules and runs their unit tests.
rules:
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml

unit:
	$(GO) test -race -count=1 -timeout 8m $(PKGS)

# cluster runs the store and end-to-end suites again on a real 3-master,
# 3-replica Redis Cluster started by the tests.
CLUSTER_PKGS = ./redisstore ./cmd/fleetd ./api
cluster:
	FLEETD_TEST_BACKEND=cluster $(GO) test -race -count=1 -timeout 8m $(CLUSTER_PKGS)

# model runs the convergence property test (cmd/fleetd/convergence_test.go)
# on N histories (make test runs 200 per backend) on BACKEND, single or
# cluster; without -race, for speed.
N       ?= 5000
BACKEND ?= single
model: deps
	FLEETD_TEST_BACKEND=$(BACKEND) FLEETD_MODEL_N=$(N) $(GO) test -count=1 -timeout 0 -v -run 'TestConvergence$$' ./cmd/fleetd

# fuzz runs every fuzz target for FUZZTIME (default 10s) each.
fuzz:
	@scripts/fuzz.sh

build:
	$(GO) build -o bin/fleetd ./cmd/fleetd

run:
	$(GO) run ./cmd/fleetd

bench: deps build
	@scripts/bench.sh

# soak (not in CI): 10 minutes at half the max rate, sampling RSS,
# goroutines and p99 every 10 s into bench-out/soak.tsv.
soak: deps
	@scripts/soak.sh

# cost (not in CI): Redis instructions and commands per event under
# callgrind, for a large and a small fleet and a second day; installs
# valgrind, and Redis's debug symbols (COST_SYMBOLS=0: without), when
# missing. Figures and dumps in bench-out/cost/.
cost:
	@scripts/ensure-deps.sh cost
	@[ "$${COST_SYMBOLS:-1}" = 0 ] || scripts/redis-symbols.sh || echo "make cost: going on without Redis's symbols (functions show as addresses)" >&2
	@scripts/cost.sh

clean:
	rm -rf bin bench-out
