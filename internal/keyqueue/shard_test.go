package keyqueue

import (
	"context"
	"strconv"
	"testing"
	"unsafe"
)

// A shard fills two cache lines of its own, so that two shards' mutexes are
// never on one line.
func TestShardSize(t *testing.T) {
	if got := unsafe.Sizeof(shard[int64]{}); got != 128 {
		t.Fatalf("shard is %d bytes, want 128", got)
	}
}

// Keys spread over the shards, and a Queue's counts cover every shard.
func TestKeysSpreadOverShards(t *testing.T) {
	var q Queue[string]
	var tickets []*Ticket[string]
	used := map[*shard[string]]bool{}
	for i := range 1000 {
		k := "key" + strconv.Itoa(i)
		tk, err := q.Lock(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk)
		used[q.shardOf(k)] = true
	}
	if len(used) != shardCount {
		t.Errorf("1000 keys used %d of %d shards", len(used), shardCount)
	}
	if n := q.Len(); n != 1000 {
		t.Errorf("Len %d, want 1000", n)
	}
	for _, tk := range tickets {
		tk.Release()
	}
	if n := q.Len(); n != 0 {
		t.Errorf("Len after release %d, want 0", n)
	}
}
