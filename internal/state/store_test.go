package state

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/codec"
)

// recordingKernel stands in for the BPF maps in unit tests; the real maps
// are exercised by the agent and fleet tests.
type recordingKernel struct {
	states []codec.State
	fail   bool
}

func (k *recordingKernel) SetOwnState(s codec.State) error {
	if k.fail {
		return errors.New("map update failed")
	}
	k.states = append(k.states, s)
	return nil
}

func TestApplyPersistsAndRestores(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state")
	k := &recordingKernel{}
	s, err := Open(Options{Initial: codec.DefaultState(), File: file, Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	bulk, _ := codec.Bulk(codec.Entry{Field: codec.FieldRows, Value: 40}, codec.Entry{Field: codec.FieldCols, Value: 120})
	got, err := s.Apply(&bulk, SourceBus)
	if err != nil || got.Rows != 40 || got.Cols != 120 {
		t.Fatalf("Apply = %v, %v", got, err)
	}
	if b, _ := os.ReadFile(file); string(b) != "regedge-state 2 "+got.Dump()+" crc32c:"+crc32c(t, "regedge-state 2 "+got.Dump())+"\n" {
		t.Fatalf("file holds %q, want the format 2 line of %s", b, got.Dump())
	}
	if len(k.states) != 2 || k.states[1] != got {
		t.Fatalf("kernel saw %v", k.states)
	}
	if v := testutil.ToFloat64(s.updates.WithLabelValues("bus")); v != 1 {
		t.Fatalf("regedge_config_updates_total{source=bus} = %v", v)
	}
	s2, err := Open(Options{Initial: codec.DefaultState(), File: file})
	if err != nil || s2.State() != got {
		t.Fatalf("restored %v, %v; want %v", s2.State(), err, got)
	}
}

func TestRejectedChangesChangeNothing(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state")
	k := &recordingKernel{}
	s, err := Open(Options{Initial: codec.DefaultState(), File: file, Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	before := s.State()
	bad, _ := codec.Bulk(codec.Entry{Field: codec.FieldRows, Value: 40}, codec.Entry{Field: codec.FieldCols, Value: 0})
	if _, err := s.Apply(&bad, SourceWS); !errors.Is(err, codec.ErrValue) {
		t.Fatalf("bad bulk: %v", err)
	}
	v2 := codec.Update(codec.FieldVersion, 2)
	if _, err := s.Apply(&v2, SourceWS); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("version 2: %v, want ErrNotAllowed", err)
	}
	k.fail = true
	upd := codec.Update(codec.FieldRows, 41)
	if _, err := s.Apply(&upd, SourceWS); err == nil {
		t.Fatal("a change the kernel refused was accepted")
	}
	if s.State() != before || len(k.states) != 1 {
		t.Fatalf("state %v, kernel %v: something changed", s.State(), k.states)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a rejected change wrote the file: %v", err)
	}
	// The file cannot be written: the kernel is put back.
	k.fail = false
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	os.WriteFile(blocker, nil, 0o600)
	s.file = filepath.Join(blocker, "state")
	if _, err := s.Apply(&upd, SourceCLI); err == nil {
		t.Fatal("a change that could not be persisted was accepted")
	}
	if s.State() != before || k.states[len(k.states)-1] != before {
		t.Fatalf("after a failed write: state %v, kernel last %v", s.State(), k.states[len(k.states)-1])
	}
}

func TestCorruptFileRefused(t *testing.T) {
	for name, body := range map[string]string{
		"not hex":      "hello\n",
		"breaks rules": "0x01a1b2c3d40000000702005000\n",
	} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "state")
			os.WriteFile(file, []byte(body), 0o600)
			if _, err := Open(Options{Initial: codec.DefaultState(), File: file}); !errors.Is(err, ErrCorruptFile) {
				t.Errorf("%s: %v, want ErrCorruptFile", name, err)
			}
		})
	}
}

// TestConfigVersionBumpsAndRollbacksStart: a state file from an older
// config version is migrated (fields kept, version raised, written back); one
// from a newer version (a rollback) is set aside and the agent starts from
// the config. Neither stops the start.
func TestConfigVersionBumpsAndRollbacksStart(t *testing.T) {
	v2 := codec.DefaultState()
	v2.Version = 2
	for _, tc := range []struct {
		name     string
		file     string
		initial  codec.State
		want     codec.State
		setAside bool
	}{
		{"older file, config bumped", "0x01a1b2c3d40000000702285000\n", v2, func() codec.State { s := v2; s.Rows = 40; return s }(), false},
		{"newer file, agent rolled back", "0x02a1b2c3d40000000702285000\n", codec.DefaultState(), codec.DefaultState(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "state")
			os.WriteFile(file, []byte(tc.file), 0o600)
			s, err := Open(Options{Initial: tc.initial, Versions: codec.NewVersionSet(tc.initial.Version), File: file})
			if err != nil {
				t.Fatalf("the agent did not start: %v", err)
			}
			if s.State() != tc.want {
				t.Fatalf("started from %s, want %s", s.State().Dump(), tc.want.Dump())
			}
			back, _, _, err := readFile(file)
			if err != nil || back != tc.want {
				t.Fatalf("state file after start: %v %s, want %s", err, back.Dump(), tc.want.Dump())
			}
			aside, _ := filepath.Glob(file + corruptPattern + "*")
			if (len(aside) == 1) != tc.setAside {
				t.Fatalf("set aside: %v", aside)
			}
		})
	}
}

func TestSubscribe(t *testing.T) {
	s, err := Open(Options{Initial: codec.DefaultState()})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan codec.State, 1)
	stop := s.Subscribe(ch)
	f := codec.Toggle(10, true)
	want, _ := s.Apply(&f, SourceWS)
	if got := <-ch; got != want {
		t.Fatalf("subscriber got %v, want %v", got, want)
	}
	stop()
	f = codec.Toggle(10, false)
	s.Apply(&f, SourceWS)
	select {
	case got := <-ch:
		t.Fatalf("unsubscribed channel got %v", got)
	default:
	}
}
