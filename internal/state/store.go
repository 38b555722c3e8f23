// Package state owns the agent's one 13-byte config state. Every change,
// from the WebSocket server, the UDP bus, the admin API, the CLI or a file
// reload, goes through Store: it is validated by the codec, applied to the
// kernel maps, persisted atomically, and only then becomes the state and is
// announced. A rejected change changes nothing anywhere.
package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regedge/regedge/internal/codec"
)

// Source says where a change came from; it labels regedge_config_updates_total.
type Source string

const (
	SourceWS   Source = "ws"
	SourceBus  Source = "bus"
	SourceCLI  Source = "cli"
	SourceFile Source = "file"
)

// ErrNotAllowed is returned for a change the agent refuses by policy: a
// config version it does not accept. Receivers answer it with ERROR code 5.
var ErrNotAllowed = errors.New("state: not allowed")

// Kernel is the part of the datapath a change must reach before it counts.
type Kernel interface {
	SetOwnState(codec.State) error
}

// Store holds the state. It is safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	cur      codec.State
	versions codec.VersionSet
	file     string
	kernel   Kernel
	subs     map[chan<- codec.State]struct{}

	updates *prometheus.CounterVec
}

// Options configure a Store.
type Options struct {
	Initial  codec.State      // used when File does not exist yet
	Versions codec.VersionSet // accepted config versions; Initial's when empty
	File     string           // where the state persists; "" for none
	Kernel   Kernel           // nil without BPF
}

// ErrCorruptFile is returned by Open when the state file exists but does not
// hold a valid state; the agent refuses to start rather than guess.
var ErrCorruptFile = errors.New("state: state file is not a valid state")

// Open restores the state from opts.File when it exists, else starts from
// opts.Initial, and pushes it to the kernel.
func Open(opts Options) (*Store, error) {
	if err := opts.Initial.Validate(); err != nil {
		return nil, fmt.Errorf("state: initial state: %w", err)
	}
	s := &Store{
		cur: opts.Initial, versions: opts.Versions, file: opts.File, kernel: opts.Kernel,
		subs: map[chan<- codec.State]struct{}{},
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regedge_config_updates_total", Help: "Config changes applied, by where they came from.",
		}, []string{"source"}),
	}
	if s.versions == (codec.VersionSet{}) {
		s.versions = codec.NewVersionSet(opts.Initial.Version)
	}
	for _, src := range []Source{SourceWS, SourceBus, SourceCLI, SourceFile} {
		s.updates.WithLabelValues(string(src))
	}
	if opts.File != "" {
		b, err := os.ReadFile(opts.File)
		switch {
		case err == nil:
			st, perr := codec.ParseDump(strings.TrimSpace(string(b)))
			if perr != nil {
				return nil, fmt.Errorf("%w: %s: %v (fix or delete it)", ErrCorruptFile, opts.File, perr)
			}
			if !s.versions.Has(st.Version) {
				return nil, fmt.Errorf("%w: %s: version %d is not accepted (fix or delete it)", ErrCorruptFile, opts.File, st.Version)
			}
			s.cur = st
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("state: %w", err)
		}
	}
	if s.kernel != nil {
		if err := s.kernel.SetOwnState(s.cur); err != nil {
			return nil, fmt.Errorf("state: push to the kernel: %w", err)
		}
	}
	return s, nil
}

// Collector returns the store's metrics.
func (s *Store) Collector() prometheus.Collector { return s.updates }

// State returns the current state.
func (s *Store) State() codec.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Versions returns the accepted config versions.
func (s *Store) Versions() codec.VersionSet { return s.versions }

// Apply applies a state-changing frame (UPDATE, FEATURE_TOGGLE, RESIZE,
// BULK) and returns the resulting state. A frame that breaks a rule is a
// codec error; a change to a version the agent does not accept is
// ErrNotAllowed; either way nothing changes.
func (s *Store) Apply(f *codec.Frame, src Source) (codec.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := s.cur.Apply(f)
	if err != nil {
		return s.cur, err
	}
	return s.commit(next, src)
}

// Set replaces the whole state (admin API, CLI, file reload).
func (s *Store) Set(next codec.State, src Source) (codec.State, error) {
	if err := next.Validate(); err != nil {
		return s.State(), err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commit(next, src)
}

// commit makes next the state: kernel first, then the file; on any failure
// the kernel is put back and the old state stays. Called with s.mu held.
func (s *Store) commit(next codec.State, src Source) (codec.State, error) {
	prev := s.cur
	if !s.versions.Has(next.Version) {
		return prev, fmt.Errorf("%w: config version %d is not accepted (accepted: %s)", ErrNotAllowed, next.Version, s.versions)
	}
	if next != prev && s.kernel != nil {
		if err := s.kernel.SetOwnState(next); err != nil {
			return prev, fmt.Errorf("state: push to the kernel: %w", err)
		}
	}
	if next != prev && s.file != "" {
		if err := writeFileAtomic(s.file, []byte(next.Dump()+"\n")); err != nil {
			if s.kernel != nil {
				_ = s.kernel.SetOwnState(prev)
			}
			return prev, err
		}
	}
	s.cur = next
	s.updates.WithLabelValues(string(src)).Inc()
	for ch := range s.subs {
		select {
		case ch <- next:
		default: // a subscriber that is behind gets the next change instead
		}
	}
	return next, nil
}

// Subscribe registers ch to receive every new state (non-blocking sends:
// give it a buffer). The returned func unsubscribes.
func (s *Store) Subscribe(ch chan<- codec.State) func() {
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}
}

// writeFileAtomic writes data to path through a temp file in the same
// directory: write, fsync, rename, fsync the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // nothing to remove after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("state: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("state: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("state: rename into %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
