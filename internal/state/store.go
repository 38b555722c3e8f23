// Package state owns the agent's one 13-byte config state. Every change,
// from the WebSocket server, the UDP bus, the admin API, the CLI or a file
// reload, goes through Store: it is validated by the codec, applied to the
// kernel maps, persisted atomically, and only then becomes the state and is
// announced. A rejected change changes nothing anywhere.
package state

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

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
	file     string // where writes go: agent.stateFile, or its symlink's target
	kernel   Kernel
	subs     map[chan<- codec.State]struct{}
	log      *slog.Logger

	updates *prometheus.CounterVec
}

// StateSource is agent.stateSource: which state wins at start when the
// state file and the config file's "config" section differ.
type StateSource string

const (
	// StateSourceFile (the default): a persisted state wins over the
	// config, said in the log; a corrupt state file stops the start.
	StateSourceFile StateSource = "file"
	// StateSourceConfig: the config file's state wins at start and is
	// written to the state file; a corrupt state file is set aside as
	// <file>.corrupt-<time>, said at ERROR level.
	StateSourceConfig StateSource = "config"
)

// Options configure a Store.
type Options struct {
	Initial  codec.State      // the config file's state: the start when File has none (or Source is config)
	Versions codec.VersionSet // accepted config versions; Initial's when empty
	File     string           // where the state persists; "" for none
	Source   StateSource      // which wins at start; "" is StateSourceFile
	Kernel   Kernel           // nil without BPF
	Log      *slog.Logger     // nil logs nothing
	Now      func() time.Time // names a set-aside file; nil is time.Now
}

// ErrCorruptFile is matched by the *CorruptError of a state file that
// exists but does not hold a valid state. With agent.stateSource "file" the
// agent refuses to start rather than guess.
var ErrCorruptFile = errors.New("state: state file is not a valid state")

// ErrStorage is matched by the *StorageError of a valid change that could
// not be persisted. Nothing changed; the sender may retry.
var ErrStorage = errors.New("state: not persisted")

// Open restores the state from opts.File per opts.Source, else starts from
// opts.Initial, and pushes it to the kernel. A File that is not a regular
// file (a FIFO, a directory, a device) or is a dangling symlink is a
// *FileError naming it, whatever the source.
func Open(opts Options) (*Store, error) {
	if err := opts.Initial.Validate(); err != nil {
		return nil, fmt.Errorf("state: initial state: %w", err)
	}
	switch opts.Source {
	case "":
		opts.Source = StateSourceFile
	case StateSourceFile, StateSourceConfig:
	default:
		return nil, fmt.Errorf("state: state source %q: want file or config", opts.Source)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{
		cur: opts.Initial, versions: opts.Versions, file: opts.File, kernel: opts.Kernel, log: opts.Log,
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
		if err := s.restore(opts); err != nil {
			return nil, err
		}
	}
	if s.kernel != nil {
		if err := s.kernel.SetOwnState(s.cur); err != nil {
			return nil, fmt.Errorf("state: push to the kernel: %w", err)
		}
	}
	return s, nil
}

// restore reads opts.File and decides, per opts.Source, which state the
// agent starts from. Every outcome but "no file yet, nothing to say" is
// logged: the operator must be able to tell which state won and why.
func (s *Store) restore(opts Options) error {
	file := opts.File
	fromFile, format, target, err := readFile(file)
	s.file = target
	var corrupt *CorruptError
	var unusable *FileError
	isCorrupt := errors.As(err, &corrupt)
	switch {
	case errors.As(err, &unusable):
		return err
	case errors.Is(err, fs.ErrNotExist):
		s.log.Info("no state file yet: starting from the config file's state", "file", file, "state", s.cur.Dump())
		return nil
	case isCorrupt && opts.Source == StateSourceConfig:
		// The target, not a symlink to it: the link keeps pointing where
		// the operator put the state.
		aside := target + corruptPattern + opts.Now().UTC().Format("20060102T150405.000Z")
		if rerr := os.Rename(target, aside); rerr != nil {
			return fmt.Errorf("%w (agent.stateSource is config, but setting it aside failed: %v)", err, rerr)
		}
		s.log.Error("state file is corrupt: set it aside and started from the config file's state",
			"file", file, "set_aside_as", aside, "err", err.Error(), "state", s.cur.Dump(), "agent.stateSource", string(opts.Source))
		s.persistAtStart("rewrote the state file after setting the corrupt one aside")
		return nil
	case isCorrupt:
		return fmt.Errorf("%w (fix or delete it, or set agent.stateSource to config to set it aside and start from the config)", err)
	case err != nil:
		return err
	}
	migrated := false
	if !s.versions.Has(fromFile.Version) {
		// A config.version bump (or a rollback) must not keep nodes from
		// starting. A file from an older version is migrated: its fields
		// kept, its version raised, when they obey the new version's
		// rules. Anything else (a newer version: a rollback) is set aside
		// and the agent starts from the config, said at ERROR level.
		up := fromFile
		up.Version = s.cur.Version
		if fromFile.Version < s.cur.Version && up.Validate() == nil {
			s.log.Warn("state file is from an older config version: migrated (fields kept, version raised)",
				"file", file, "from_version", fromFile.Version, "to_version", up.Version, "state", up.Dump())
			fromFile, migrated = up, true
		} else {
			aside := target + corruptPattern + opts.Now().UTC().Format("20060102T150405.000Z")
			if rerr := os.Rename(target, aside); rerr != nil {
				return fmt.Errorf("%w: %s: version %d is not accepted (accepted: %s), and setting it aside failed: %v",
					ErrCorruptFile, file, fromFile.Version, s.versions, rerr)
			}
			s.log.Error("state file is from a config version this agent does not accept: set it aside and started from the config file's state",
				"file", file, "file_version", fromFile.Version, "accepted", s.versions.String(), "set_aside_as", aside, "state", s.cur.Dump())
			s.persistAtStart("wrote the config file's state to the state file")
			return nil
		}
	}
	if target != file {
		s.log.Info("state file is a symlink: writes go to its target", "file", file, "target", target)
	}
	switch opts.Source {
	case StateSourceFile:
		if fromFile != s.cur {
			s.log.Info("state file overrides the config file's config section (agent.stateSource is file)",
				"file", file, "state", fromFile.Dump(), "config", s.cur.Dump())
		} else {
			s.log.Info("state restored from the state file", "file", file, "state", fromFile.Dump())
		}
		s.cur = fromFile
		switch {
		case migrated:
			s.persistAtStart("wrote the migrated state to the state file")
		case format == formatLegacy:
			s.persistAtStart("migrated the state file from format 1 (no checksum) to format 2 (crc32c)")
		}
	case StateSourceConfig:
		if fromFile != s.cur {
			s.log.Info("config file's config section overrides the state file (agent.stateSource is config)",
				"file", file, "file_state", fromFile.Dump(), "state", s.cur.Dump())
		}
		if fromFile != s.cur || format == formatLegacy {
			s.persistAtStart("wrote the config file's state to the state file")
		}
	}
	return nil
}

// persistAtStart writes the starting state to the file. Failing does not
// stop the start (the state in memory is sound and every later change
// retries the write), but it is said at ERROR level.
func (s *Store) persistAtStart(what string) {
	if err := writeFileAtomic(s.file, encodeFile(s.cur)); err != nil {
		s.log.Error("state file not written at start: changes will be refused until it can be", "file", s.file, "err", err.Error())
		return
	}
	s.log.Warn(what, "file", s.file, "state", s.cur.Dump())
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
		if err := writeFileAtomic(s.file, encodeFile(next)); err != nil {
			if s.kernel != nil {
				_ = s.kernel.SetOwnState(prev)
			}
			// Logged here, once for every door (ws, bus, admin, reload):
			// each door answers with its own code.
			s.log.Error("config change refused: the state file could not be written",
				"source", string(src), "file", s.file, "err", err.Error(), "state", prev.Dump(), "refused", next.Dump())
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
