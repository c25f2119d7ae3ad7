package redisstore

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// TestDeleteWorkspace removes a workspace larger than one step
// (WorkspaceScanCount devices and API keys) on a real Redis (a real
// Cluster with FLEETD_TEST_BACKEND=cluster) and checks that nothing of it
// is left, that the other workspace is untouched, and that an index entry
// naming another workspace survives.
func TestDeleteWorkspace(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	const devices = WorkspaceScanCount*2 + 37
	var evs []fleet.Event
	for i := range devices {
		d := fmt.Sprintf("doomed-d%d", i)
		evs = append(evs, reg(d, "doomed", t0.Add(-time.Hour)))
		if i%3 == 0 {
			evs = append(evs, online(d, true, t0.Add(-50*time.Minute), "o"+d),
				started(d, "s"+d, t0.Add(-40*time.Minute)), ended(d, "s"+d, "success", 60, t0.Add(-30*time.Minute)))
		}
	}
	evs = append(evs, reg("kept-d1", "kept", t0.Add(-time.Hour)), online("kept-d1", true, t0.Add(-50*time.Minute), "ok1"),
		ended("kept-d1", "ks1", "success", 90, t0.Add(-30*time.Minute)))
	for lo := 0; lo < len(evs); lo += 500 {
		apply(t, s, evs[lo:min(lo+500, len(evs))]...)
	}
	// A device that moved on to kept: its history keeps that placement.
	apply(t, s, reg("moved", "doomed", t0.Add(-time.Hour)))
	apply(t, s, reg("moved", "kept", t0.Add(-30*time.Minute)))
	if err := s.AddMember(ctx, "doomed", fleet.Member{Email: "a@b.c", Role: fleet.RoleOwner, Status: fleet.MemberActive, InvitedAt: t0}); err != nil {
		t.Fatal(err)
	}
	mkKey := func(ws string, i int) []byte {
		h := sha256.Sum256(fmt.Appendf(nil, "sk_live_%s_%d", ws, i))
		if err := s.CreateKey(ctx, h[:], fleet.APIKey{ID: fmt.Sprintf("key_%s_%d", ws, i), Name: "t", Workspace: ws, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		return h[:]
	}
	const apiKeys = WorkspaceScanCount + 3
	var doomedKeys [][]byte
	for i := range apiKeys {
		doomedKeys = append(doomedKeys, mkKey("doomed", i))
	}
	keptKey := mkKey("kept", 0)
	before := stats(t, s, "kept")

	d, err := s.DeleteWorkspace(ctx, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	if d.APIKeys != apiKeys || d.IndexItems != devices+1 || d.Keys == 0 {
		t.Errorf("deletion = %+v, want %d API keys and %d index entries", d, apiKeys, devices+1)
	}
	if left := keysMatching(t, s, "fl:{w:doomed}:*"); len(left) > 0 {
		t.Errorf("keys of the workspace left: %v", left[:min(len(left), 10)])
	}
	for i, h := range doomedKeys {
		if _, err := s.KeyByHash(ctx, h); fleet.ErrorCode(err) != fleet.ENOTFOUND {
			t.Fatalf("API key %d still resolves: %v", i, err)
		}
	}
	if left := keysMatching(t, s, "fl:keyid:key_doomed_*"); len(left) > 0 {
		t.Errorf("key id entries left: %d", len(left))
	}
	for _, dev := range []string{"doomed-d0", "doomed-d1", fmt.Sprintf("doomed-d%d", devices-1)} {
		if err := s.rdb.HGet(ctx, idxKey(bucketOf(dev)), dev).Err(); err != redis.Nil {
			t.Errorf("index entry of %s left (%v)", dev, err)
		}
	}
	if h, err := s.rdb.HGet(ctx, idxKey(bucketOf("moved")), "moved").Result(); err != nil || h != (placement{ts: ms(t0.Add(-30 * time.Minute)), ws: "kept"}).String() {
		t.Errorf("the history of the device that moved on = %q, %v; want its placement in kept only", h, err)
	}
	wss, err := s.ListWorkspaces(ctx, "")
	if err != nil || slices.Contains(wss, "doomed") || !slices.Contains(wss, "kept") {
		t.Errorf("workspaces after delete = %v, %v", wss, err)
	}
	if after := stats(t, s, "kept"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("kept changed: %+v, was %+v", after, before)
	}
	if k, err := s.KeyByHash(ctx, keptKey); err != nil || k.Workspace != "kept" {
		t.Errorf("kept's key = %+v, %v", k, err)
	}
	// A device of the deleted workspace registers anew, elsewhere.
	if res := apply(t, s, reg("doomed-d0", "reborn", t0)); res[0] != fleet.Accepted {
		t.Errorf("re-registering a device of the deleted workspace: %v", res[0])
	}
	if st := stats(t, s, "reborn"); st.Devices != 1 {
		t.Errorf("reborn = %+v", st)
	}
	// Again, and an unknown workspace: nothing to do, no error.
	for _, ws := range []string{"doomed", "never-was"} {
		if d, err := s.DeleteWorkspace(ctx, ws); err != nil || d.APIKeys+d.IndexItems+d.Keys != 0 {
			t.Errorf("DeleteWorkspace(%s) = %+v, %v; want nothing removed", ws, d, err)
		}
	}
	if _, err := s.DeleteWorkspace(ctx, "bad}id"); fleet.ErrorCode(err) != fleet.EINVALID {
		t.Errorf("an invalid id: %v", err)
	}
}

func TestListWorkspacesPrefix(t *testing.T) {
	s, _ := MustOpen(t)
	for _, ws := range []string{"lt-a-0", "lt-a-1", "acme", "lt-b-0"} {
		apply(t, s, reg("d-"+ws, ws, t0))
	}
	got, err := s.ListWorkspaces(context.Background(), "lt-a-")
	if err != nil || fmt.Sprint(got) != "[lt-a-0 lt-a-1]" {
		t.Errorf("ListWorkspaces(lt-a-) = %v, %v", got, err)
	}
	if _, err := s.ListWorkspaces(context.Background(), "lt-*"); fleet.ErrorCode(err) != fleet.EINVALID {
		t.Errorf("a glob prefix: %v", err)
	}
}

// TestObserveNamesCalls: Config.Observe sees the store's calls under
// bounded operation names, and their failures.
func TestObserveNamesCalls(t *testing.T) {
	b := newBackend(t)
	var mu sync.Mutex
	calls, errs := map[string]int{}, map[string]int{}
	b.cfg.Observe = func(op string, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		calls[op]++
		if err != nil {
			errs[op]++
			t.Logf("%s: %v", op, err)
		}
		if d < 0 {
			t.Errorf("%s: negative duration", op)
		}
	}
	s := b.open(t)
	ctx := context.Background()
	apply(t, s, reg("d1", "acme", t0), online("d1", true, t0, "o1"))
	if _, err := s.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte("k"))
	if err := s.CreateKey(ctx, h[:], fleet.APIKey{ID: "key_1", Workspace: "acme", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeyByHash(ctx, h[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListDevices(ctx, "acme", fleet.DeviceFilter{}, "", 10); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, op := range []string{"place", "apply", "stats", "create_key", "key", "devices", "ping"} {
		if calls[op] == 0 {
			t.Errorf("no call observed as %q (observed: %v)", op, calls)
		}
	}
	if len(errs) > 0 {
		t.Errorf("errors observed on a healthy Redis: %v", errs)
	}
	for op := range calls {
		if op == "evalsha" || op == "" {
			t.Errorf("a call observed as %q: a script without a name in scriptNames?", op)
		}
	}
	mu.Unlock()
	if b.srv == nil {
		return // the failure half stops the one server
	}
	b.srv.Stop()
	if _, err := s.KeyByHash(ctx, h[:]); err == nil {
		t.Fatal("KeyByHash with Redis stopped succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if errs["key"] == 0 {
		t.Errorf("the failed call was not observed as an error: %v", errs)
	}
}

// TestEveryScriptHasAName keeps scriptNames in step with allScripts, so a
// new script is observed under its own name, not "evalsha".
func TestEveryScriptHasAName(t *testing.T) {
	seen := map[string]bool{}
	for _, sc := range allScripts {
		n, ok := scriptNames[sc]
		if !ok {
			t.Errorf("script %s has no name in scriptNames", sc.Hash())
		}
		if seen[n] {
			t.Errorf("two scripts named %q", n)
		}
		seen[n] = true
	}
}
