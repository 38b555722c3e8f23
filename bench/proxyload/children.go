//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// children are the processes the tool started (origin, baselines, regedge,
// nginx). Every one is stopped when the tool ends, however it ends:
// returning, an error, SIGINT/SIGTERM (stopAll from the signal handler), or
// the tool being killed (each child has a parent-death signal).
type children struct {
	mu    sync.Mutex
	procs []*child
}

type child struct {
	name string
	cmd  *exec.Cmd
	// stop is the polite signal: SIGTERM, which for nginx's master is
	// its fast shutdown (it stops its workers too).
	stop    syscall.Signal
	extra   func() []int // more processes to kill if the child lingers (nginx's workers)
	done    chan struct{}
	logPath string
}

// start runs name with args, its stdout and stderr appended to logPath,
// with files passed as descriptors 3, 4, ...
func (cs *children) start(label, logPath string, files []*os.File, name string, args ...string) (*child, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = files
	// SIGTERM when the tool dies without cleaning up: regedge and the
	// Go servers exit on it, nginx's master takes its workers with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed() {
		return nil, fmt.Errorf("stopping")
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	c := &child{name: label, cmd: cmd, stop: syscall.SIGTERM, done: make(chan struct{}), logPath: logPath}
	go func() { _ = cmd.Wait(); close(c.done) }() // a child stopped by us exits with a signal status
	cs.procs = append(cs.procs, c)
	return c, nil
}

var stopping sync.Once
var stopped = make(chan struct{})

func (cs *children) closed() bool {
	select {
	case <-stopped:
		return true
	default:
		return false
	}
}

// stopAll stops every child, politely first, then with SIGKILL after 3 s.
func (cs *children) stopAll() {
	stopping.Do(func() { close(stopped) })
	cs.mu.Lock()
	procs := cs.procs
	cs.procs = nil
	cs.mu.Unlock()
	var lingering []int
	for _, c := range procs {
		if c.extra != nil {
			lingering = append(lingering, c.extra()...)
		}
		_ = c.cmd.Process.Signal(c.stop) // it may have exited already
	}
	deadline := time.After(3 * time.Second)
	for _, c := range procs {
		select {
		case <-c.done:
		case <-deadline:
			_ = c.cmd.Process.Kill() // likewise
			<-c.done
		}
	}
	for _, pid := range lingering {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // likewise
		}
	}
}

// stop stops one child (politely, then SIGKILL after 3 s) and forgets it.
func (cs *children) stop(c *child) {
	cs.mu.Lock()
	cs.procs = slices.DeleteFunc(cs.procs, func(p *child) bool { return p == c })
	cs.mu.Unlock()
	_ = c.cmd.Process.Signal(c.stop) // it may have exited already
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		_ = c.cmd.Process.Kill() // likewise
		<-c.done
	}
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// tail is the end of a child's log, for error messages.
func (c *child) tail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// listen opens a loopback listener to hand to a child.
func listen() (*os.File, string, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	return f, l.Addr().String(), err
}

// freePort is a loopback address for a child that binds its own listener
// (regedge, nginx): free when asked, so a rare race with another process is
// reported as that child failing to start.
func freePort() (string, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitUp waits until addr accepts connections or c exits.
func waitUp(c *child, addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c.exited() {
			return fmt.Errorf("%s exited: %s", c.name, c.tail())
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not listen on %s within 30 s: %s", c.name, addr, c.tail())
}
