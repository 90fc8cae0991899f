package fencing

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestToken(t *testing.T) {
	for _, c := range []struct {
		epoch, base, s int64
		want           int64
		ok             bool
	}{
		{1, Window - 1, Window, 1<<40 + 1, true},
		{1, Window - 1, 2*Window - 2, 1<<40 + Window - 1, true},
		{1, Window - 1, 2*Window - 1, 0, false}, // beyond the window
		{1, Window - 1, Window - 1, 0, false},   // at the base: drawn before the bump
		{MaxEpoch, 0, Window - 1, math.MaxInt64, true},
		{MaxEpoch + 1, 0, 1, 0, false},
	} {
		got, ok := Token(c.epoch, c.base, c.s)
		if got != c.want || ok != c.ok {
			t.Errorf("Token(%d, %d, %d) = %d, %v; want %d, %v", c.epoch, c.base, c.s, got, ok, c.want, c.ok)
		}
	}
}

// TestCacheValue: the cached offset and limit give the token Token gives,
// for every draw of the window, and none past it.
func TestCacheValue(t *testing.T) {
	for _, c := range []struct{ epoch, base int64 }{{1, Window - 1}, {7, 123456789}, {MaxEpoch, math.MaxInt64 - Window}} {
		parts := strings.Split(CacheValue(c.epoch, c.base), ",")
		off, _ := strconv.ParseInt(parts[0], 10, 64)
		limit, _ := strconv.ParseInt(parts[1], 10, 64)
		for _, s := range []int64{c.base + 1, c.base + Window/2, c.base + Window - 1} {
			want, _ := Token(c.epoch, c.base, s)
			if s >= limit || s+off != want {
				t.Errorf("epoch %d base %d draw %d: cache %v gives %d, want %d", c.epoch, c.base, s, parts, s+off, want)
			}
		}
		if limit != c.base+Window {
			t.Errorf("limit %d, want %d", limit, c.base+Window)
		}
	}
}

// TestFromCache: the client's reading of the cache gives Token's token for
// every draw of the window, and nothing past it or from a bad cache.
func TestFromCache(t *testing.T) {
	for _, c := range []struct{ epoch, base int64 }{{1, Window - 1}, {7, 123456789}, {MaxEpoch, math.MaxInt64 - Window}} {
		cache := CacheValue(c.epoch, c.base)
		for _, s := range []int64{c.base + 1, c.base + Window/2, c.base + Window - 1} {
			want, _ := Token(c.epoch, c.base, s)
			if got, ok := FromCache(cache, s); !ok || got != want {
				t.Errorf("FromCache(%q, %d) = %d, %v; want %d", cache, s, got, ok, want)
			}
		}
		if c.base <= math.MaxInt64-Window {
			if _, ok := FromCache(cache, c.base+Window); ok {
				t.Errorf("FromCache(%q) covers the draw past the window", cache)
			}
		}
	}
	for _, bad := range []string{"", "12", "x,5", "5,x", ","} {
		if _, ok := FromCache(bad, 1); ok {
			t.Errorf("FromCache(%q) gave a token", bad)
		}
	}
}

// TestNextBase: a new base is on the epoch's grid, at least one window
// above the old base, and at least margin above the draw that bumped.
func TestNextBase(t *testing.T) {
	for _, c := range []struct{ base, s, want int64 }{
		{0, 1, Window - 1},                        // a fresh table's first bump
		{Window - 1, Window + 5, 2*Window - 2},    // a new lifetime early in the window
		{Window - 1, 2*Window - 10, 3*Window - 2}, // late in the window: margin pushes it one further
		{Window - 1, 5*Window + 3, 6*Window - 2},  // draws far beyond the window
		{Window - 1, 3, 2*Window - 2},             // a draw below the base
	} {
		got, ok := nextBase(c.base, c.s)
		if !ok || got != c.want {
			t.Errorf("nextBase(%d, %d) = %d, %v; want %d", c.base, c.s, got, ok, c.want)
		}
		if got < c.s+margin || got < c.base+Window-1 || (got-c.base+1)%Window != 0 {
			t.Errorf("nextBase(%d, %d) = %d: off the grid or too low", c.base, c.s, got)
		}
	}
	if _, ok := nextBase(0, math.MaxInt64-margin+1); ok {
		t.Error("nextBase near the end of int64 fits")
	}
	if _, ok := nextBase(math.MaxInt64-Window+1, math.MaxInt64-Window-margin); ok {
		t.Error("a base past int64 fits")
	}
}

// TestBound: what the documentation promises, 2^63 draws in all, is
// 290,000 years at 1,000,000 acquisitions a second.
func TestBound(t *testing.T) {
	years := float64(MaxEpoch+1) * float64(Window) / 1e6 / (365.25 * 24 * 3600)
	if years < 290000 || years > 300000 {
		t.Errorf("%.0f years", years)
	}
	perLifetime := float64(Window) / 1e6 / 86400
	if perLifetime < 12.7 || perLifetime > 12.8 {
		t.Errorf("a window lasts %.1f days", perLifetime)
	}
}
