package pgconf

import (
	"testing"

	"github.com/pgadvisory/pgadvisory/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }
