package keyqueue

import (
	"context"
	"strconv"
	"testing"
	"unsafe"
)

// A shard's slots start 64 bytes in, after its mutex and map, and a slot of
// a two-word key fits in one cache line.
func TestShardLayout(t *testing.T) {
	var s shard[[2]int64]
	if off := unsafe.Offsetof(s.slots); off != 64 {
		t.Errorf("slots at offset %d, want 64", off)
	}
	if size := unsafe.Sizeof(s.slots[0]); size > 64 {
		t.Errorf("a slot is %d bytes, want at most 64", size)
	}
}

// Keys spread over the shards; past its slots a shard keeps keys in its map,
// and a Queue's counts cover both; everything is given back.
func TestKeysSpreadOverShards(t *testing.T) {
	var q Queue[string]
	var tickets []*Ticket[string]
	used := map[*shard[string]]bool{}
	const n = 1000 // far more than shardCount*slotsPerShard
	for i := range n {
		k := "key" + strconv.Itoa(i)
		tk, err := q.Lock(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk)
		used[q.shardOf(k)] = true
		if q.Holders(k) != 1 {
			t.Fatalf("%s: %d holders, want 1", k, q.Holders(k))
		}
	}
	if len(used) != shardCount {
		t.Errorf("%d keys used %d of %d shards", n, len(used), shardCount)
	}
	inMaps := 0
	for i := range q.shards {
		inMaps += len(q.shards[i].more)
	}
	if inMaps != n-shardCount*slotsPerShard {
		t.Errorf("%d keys in the maps, want %d", inMaps, n-shardCount*slotsPerShard)
	}
	if got := q.Len(); got != n {
		t.Errorf("Len %d, want %d", got, n)
	}
	// Give back every other one, then take them again: slots and map
	// entries are reused.
	for i := 0; i < n; i += 2 {
		tickets[i].Release()
	}
	if got := q.Len(); got != n/2 {
		t.Errorf("Len %d after releasing half, want %d", got, n/2)
	}
	for i := 0; i < n; i += 2 {
		k := "key" + strconv.Itoa(i)
		tk, ok := q.TryLock(k)
		if !ok {
			t.Fatalf("TryLock %s refused after its release", k)
		}
		tickets[i] = tk
	}
	for _, tk := range tickets {
		tk.Release()
	}
	if got := q.Len(); got != 0 {
		t.Errorf("Len after release %d, want 0", got)
	}
	for i := range q.shards {
		for j := range q.shards[i].slots {
			if sl := &q.shards[i].slots[j]; sl.used || sl.key != "" {
				t.Fatalf("shard %d slot %d still used (%q)", i, j, sl.key)
			}
		}
	}
}
