//go:build linux

package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// localWatch keeps config_map's local address list equal to the addresses
// of the network namespace the datapath was opened in: every address change
// netlink reports there makes it list the addresses again and write the
// list (SetLocalAddrs, which writes only when it changed).
type localWatch struct {
	o        *Objects
	ns       netns.NsHandle  // the namespace watched (Open's thread's)
	h        *netlink.Handle // its route netlink socket, for the dumps
	attached []string        // interfaces the programs are attached to
	report   func(error)     // Config.LocalAddrError, or nil
	stop     chan struct{}
	done     chan struct{}
	// sub ends the current subscription: closing it closes its socket.
	// The netlink package closes that socket only when its done channel
	// closes, not when the subscription ends by itself (an overflow), so
	// each subscription has its own, closed when it ends.
	sub chan struct{}

	mu  sync.Mutex
	err error // the last failure, nil once a list was written after it
}

// localResubscribeDelay is how long the watcher waits before subscribing
// again when the kernel dropped its subscription (its buffer overflowed).
const localResubscribeDelay = time.Second

// startLocalWatch fills the local list from the calling thread's network
// namespace and keeps it current until stop. It subscribes before it lists:
// a change between the two is seen by the next listing.
func startLocalWatch(o *Objects, attached []string, report func(error)) (*localWatch, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("loader: local addresses: the network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("loader: local addresses: netlink: %w", err)
	}
	w := &localWatch{o: o, ns: ns, h: h, attached: attached, report: report, stop: make(chan struct{}), done: make(chan struct{})}
	ch, err := w.subscribe()
	if err == nil {
		err = w.refresh()
	}
	if err != nil {
		w.endSub()
		w.h.Close()
		w.ns.Close()
		return nil, err
	}
	go w.run(ch)
	return w, nil
}

func (w *localWatch) subscribe() (chan netlink.AddrUpdate, error) {
	ch := make(chan netlink.AddrUpdate, 64)
	sub := make(chan struct{})
	err := netlink.AddrSubscribeWithOptions(ch, sub, netlink.AddrSubscribeOptions{Namespace: &w.ns})
	if err != nil {
		close(sub) // whatever socket it opened before failing
		return nil, fmt.Errorf("loader: local addresses: subscribe: %w", err)
	}
	w.sub = sub
	return ch, nil
}

// endSub closes the current subscription's socket, if any.
func (w *localWatch) endSub() {
	if w.sub != nil {
		close(w.sub)
		w.sub = nil
	}
}

// run lists again after every burst of updates. When the subscription
// ends by itself (the kernel overflowed its buffer: updates were lost) it
// subscribes again and lists, so nothing lost stays wrong.
func (w *localWatch) run(ch chan netlink.AddrUpdate) {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			w.endSub()
			for range ch { // the subscription closes it once its socket is closed
			}
			return
		case _, ok := <-ch:
			if !ok {
				w.endSub() // else its socket stays open, subscribed, until stop
				// Updates were lost: an address the node gave up in the
				// meantime must not stay on the list until the next
				// listing; an empty list only costs FIB lookups.
				lost := errors.New("loader: local addresses: the netlink subscription ended (updates lost): subscribing again")
				w.fail(errors.Join(lost, w.o.SetLocalAddrs(nil)))
				select {
				case <-w.stop:
					return
				case <-time.After(localResubscribeDelay):
				}
				var err error
				if ch, err = w.subscribe(); err != nil {
					w.fail(err)
					ch = make(chan netlink.AddrUpdate)
					close(ch) // try again after the delay
					continue
				}
			}
			for drained := false; !drained; { // one listing for a burst
				select {
				case _, ok := <-ch:
					drained = !ok
				default:
					drained = true
				}
			}
			if err := w.refresh(); err != nil {
				w.fail(err)
			}
		}
	}
}

// refresh lists the namespace's addresses and writes the list. When it
// cannot list them it empties the list: an address the node no longer has
// must not stay on it (a packet to it, routed on to whoever has it now,
// would be judged here), and an empty list only costs FIB lookups.
func (w *localWatch) refresh() error {
	addrs, err := w.list()
	if err != nil {
		return errors.Join(err, w.o.SetLocalAddrs(nil))
	}
	if err := w.o.SetLocalAddrs(addrs); err != nil {
		return err
	}
	w.mu.Lock()
	w.err = nil
	w.mu.Unlock()
	return nil
}

func (w *localWatch) list() ([]netip.Addr, error) {
	attached := map[int]bool{}
	for _, name := range w.attached {
		if l, err := w.h.LinkByName(name); err == nil {
			attached[l.Attrs().Index] = true
		}
	}
	all, err := w.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("loader: local addresses: list: %w", err)
	}
	var addrs []nodeAddr
	for _, a := range all {
		// An address still in duplicate address detection, or that
		// failed it, is not the node's yet; netlink reports the change.
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 || a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		addrs = append(addrs, nodeAddr{addr: ip.Unmap(), attached: attached[a.LinkIndex], scope: a.Scope})
	}
	return orderLocal(addrs), nil
}

func (w *localWatch) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
	if w.report != nil {
		w.report(err)
	}
}

// Err is the watcher's last failure (nil once a listing after it worked).
func (w *localWatch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// close stops the watcher and waits for it: nothing writes config_map
// after it returns.
func (w *localWatch) close() {
	close(w.stop)
	<-w.done
	w.h.Close()
	w.ns.Close()
}

// watchLocal starts the local address watcher in the calling thread's
// network namespace (Open's). Without it the list is emptied, not left as
// an earlier agent wrote it, and a note says so: every drop then asks the
// FIB, as it did before the list.
func (d *Datapath) watchLocal() error {
	w, err := startLocalWatch(d.Objects, d.cfg.Interfaces, d.cfg.LocalAddrError)
	if err != nil {
		if cerr := d.Objects.SetLocalAddrs(nil); cerr != nil {
			return errors.Join(err, cerr)
		}
		d.Notes = append(d.Notes, fmt.Sprintf("the node's addresses are not watched (%v): every drop asks the FIB whether the packet is the node's", err))
		return nil
	}
	d.local = w
	return nil
}

// LocalWatchErr is the local address watcher's last failure: nil while the
// list follows the namespace's addresses.
func (d *Datapath) LocalWatchErr() error {
	if d.local == nil {
		return errors.New("loader: the node's addresses are not watched")
	}
	return d.local.Err()
}
