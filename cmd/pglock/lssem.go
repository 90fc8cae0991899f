package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/pgadvisory/pgadvisory/advisory"
	"github.com/pgadvisory/pgadvisory/internal/lockview"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

// semFlags checks ls's --sem, --ns and --slots.
func (c *command) semFlags(nsFlag string) error {
	switch {
	case c.sem == "" && nsFlag != "":
		return errors.New("--ns needs --sem NAME")
	case c.sem == "":
		return nil
	case nsFlag == "":
		return errors.New("--sem needs --ns, the namespace of the semaphore's slots")
	case c.semSlots < 1 || c.semSlots > advisory.MaxSemaphoreSlots:
		return fmt.Errorf("--slots must be from 1 to %d", advisory.MaxSemaphoreSlots)
	}
	id, err := c.nsID(nsFlag)
	if err != nil {
		return err
	}
	c.semNS = id
	return nil
}

// semSlotKeys maps the keys of the semaphore of --sem to their slot
// numbers: the rule of advisory.SemaphoreSlots (slot i is the pair of the
// namespace id and keyspace.Hash32(name) + i, wrapping), which needs only
// the namespace's id.
func (c *command) semSlotKeys() map[keyspace.Key]int {
	base := keyspace.Hash32(c.sem)
	out := make(map[keyspace.Key]int, c.semSlots)
	for i := range c.semSlots {
		out[keyspace.Pair(c.semNS, base+int32(uint32(i)))] = i
	}
	return out
}

// filterSem keeps the rows of the semaphore's slots, and returns their slot
// numbers in the same order.
func filterSem(locks []lockview.Lock, slots map[keyspace.Key]int) ([]lockview.Lock, []int) {
	var keep []lockview.Lock
	var nums []int
	for _, l := range locks {
		if i, ok := slots[l.Key]; ok {
			keep = append(keep, l)
			nums = append(nums, i)
		}
	}
	return keep, nums
}

// semSummary prints how many slots are held and how many sessions wait.
func semSummary(out io.Writer, name string, n int, locks []lockview.Lock, nums []int) {
	held := map[int]bool{}
	waiting := 0
	for i, l := range locks {
		if l.Granted {
			held[nums[i]] = true
		} else {
			waiting++
		}
	}
	fmt.Fprintf(out, "semaphore %q: %d of %d slots held, %d sessions waiting on the server\n", name, len(held), n, waiting)
}
