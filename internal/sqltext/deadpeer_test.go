package sqltext

import (
	"strings"
	"testing"
	"time"
)

// TestDeadPeerFor: the keepalive settings give up on a silent client within
// the bound (idle + count*interval <= bound, for bounds of 4 s and more),
// never with a setting of 0 (which means "the system's default").
func TestDeadPeerFor(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 4 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, time.Minute, time.Hour} {
		p := DeadPeerFor(d)
		total := time.Duration(p.KeepalivesIdle+p.KeepalivesCount*p.KeepalivesInterval) * time.Second
		if total > max(d, 4*time.Second) {
			t.Errorf("DeadPeerFor(%v): keepalives give up after %v", d, total)
		}
		if p.KeepalivesIdle < 1 || p.KeepalivesInterval < 1 || p.KeepalivesCount < 1 || p.UserTimeoutMS < 1 || p.CheckIntervalMS < 1 {
			t.Errorf("DeadPeerFor(%v) = %+v: a zero setting means the system default", d, p)
		}
		if time.Duration(p.UserTimeoutMS)*time.Millisecond != total {
			t.Errorf("DeadPeerFor(%v): tcp_user_timeout %d ms, keepalives %v", d, p.UserTimeoutMS, total)
		}
		for _, q := range []string{p.SQL(), p.LocalSQL()} {
			for _, kv := range p.Settings() {
				if !strings.Contains(q, "('"+kv[0]+"', '"+kv[1]+"')") {
					t.Errorf("%q lacks %v", q, kv)
				}
			}
		}
	}
}
