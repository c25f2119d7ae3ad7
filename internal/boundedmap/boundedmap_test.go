package boundedmap

import (
	"fmt"
	"sync"
	"testing"
)

func identity(k int) uint64 { return uint64(k) }

func TestGetPutDelete(t *testing.T) {
	m := New(Config[string, int]{Capacity: 100, Hash: StringHash()})
	if _, ok := m.Get("a"); ok {
		t.Fatal("empty map has a")
	}
	m.Put("a", 1)
	m.Put("b", 2)
	m.Put("a", 3)
	if v, ok := m.Get("a"); !ok || v != 3 {
		t.Fatalf("a = %d %v, want 3", v, ok)
	}
	if n := m.Len(); n != 2 {
		t.Fatalf("Len %d, want 2", n)
	}
	m.Delete("a")
	if _, ok := m.Get("a"); ok {
		t.Fatal("a survived Delete")
	}
	if v, _ := m.Get("b"); v != 2 {
		t.Fatalf("b = %d, want 2", v)
	}
}

func TestUpdate(t *testing.T) {
	m := New(Config[string, int]{Capacity: 10, Hash: StringHash()})
	inc := func(v int, ok bool) int {
		if !ok {
			return 100
		}
		return v + 1
	}
	if v := m.Update("k", inc); v != 100 {
		t.Fatalf("first Update gave %d, want 100 (absent)", v)
	}
	if v := m.Update("k", inc); v != 101 {
		t.Fatalf("second Update gave %d, want 101", v)
	}
	if v, _ := m.Get("k"); v != 101 {
		t.Fatalf("stored %d, want 101", v)
	}
}

// TestBounded drives each policy far past its capacity.
func TestBounded(t *testing.T) {
	tests := map[string]struct {
		cfg Config[int, bool]
		// min is the fewest entries a full map may hold: a cleared shard
		// starts again from one.
		min int
	}{
		"clear":            {Config[int, bool]{Capacity: 1024, Shards: 16, Hash: identity}, 16},
		"expendable-first": {Config[int, bool]{Capacity: 1024, Shards: 16, Hash: identity, Expendable: func(keep bool) bool { return !keep }}, 1024},
		"one shard":        {Config[int, bool]{Capacity: 7, Shards: 1, Hash: identity}, 1},
		"default shards":   {Config[int, bool]{Capacity: 640, Hash: identity}, DefaultShards},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := New(tc.cfg)
			for i := range 10 * tc.cfg.Capacity {
				m.Put(i, false)
				if n := m.Len(); n > tc.cfg.Capacity {
					t.Fatalf("%d entries after %d puts, capacity %d", n, i+1, tc.cfg.Capacity)
				}
			}
			if n := m.Len(); n < tc.min {
				t.Fatalf("%d entries after the flood, want at least %d", n, tc.min)
			}
		})
	}
}

// TestExpendableFirst: a flood of expendable entries evicts its own kind,
// never the entries worth keeping, while there are expendable ones to drop.
func TestExpendableFirst(t *testing.T) {
	m := New(Config[int, bool]{Capacity: 64, Shards: 1, Hash: identity, Expendable: func(keep bool) bool { return !keep }})
	for i := range 8 {
		m.Put(i, true)
	}
	for i := 100; i < 100+100*64; i++ {
		m.Put(i, false)
	}
	for i := range 8 {
		if v, ok := m.Get(i); !ok || !v {
			t.Fatalf("kept entry %d evicted by a flood of expendable ones", i)
		}
	}
	if n := m.Len(); n != 64 {
		t.Fatalf("%d entries, want the capacity 64", n)
	}
	// With nothing expendable left, room is still made.
	m2 := New(Config[int, bool]{Capacity: 4, Shards: 1, Hash: identity, Expendable: func(keep bool) bool { return !keep }})
	for i := range 10 {
		m2.Put(i, true)
	}
	if n := m2.Len(); n != 4 {
		t.Fatalf("%d entries, want 4", n)
	}
	if _, ok := m2.Get(9); !ok {
		t.Fatal("the newest entry is missing")
	}
}

// TestReplaceNeverEvicts: setting a key that is there already makes no
// room, even in a full shard.
func TestReplaceNeverEvicts(t *testing.T) {
	m := New(Config[int, int]{Capacity: 4, Shards: 1, Hash: identity})
	for i := range 4 {
		m.Put(i, i)
	}
	m.Put(2, 20)
	m.Update(3, func(v int, _ bool) int { return v * 10 })
	if n := m.Len(); n != 4 {
		t.Fatalf("%d entries after replacing in a full shard, want 4", n)
	}
}

func TestConcurrent(t *testing.T) {
	m := New(Config[string, int]{Capacity: 256, Shards: 8, Hash: StringHash()})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := fmt.Sprint(i % 300)
				m.Update(k, func(v int, _ bool) int { return v + 1 })
				m.Get(k)
				if i%7 == g {
					m.Delete(k)
				}
			}
		})
	}
	wg.Wait()
	if n := m.Len(); n > 256 {
		t.Fatalf("%d entries, capacity 256", n)
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	for name, c := range map[string]Config[int, int]{
		"no hash":       {Capacity: 1},
		"zero capacity": {Hash: identity},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("New accepted it")
				}
			}()
			New(c)
		})
	}
}

func BenchmarkGet(b *testing.B) {
	m := New(Config[string, int]{Capacity: 1 << 16, Hash: StringHash()})
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("10.0.%d.%d", i/256, i%256)
		m.Put(keys[i], i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Get(keys[i%len(keys)])
			i++
		}
	})
}
