package main

import (
	"bufio"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/configbus"
	"github.com/regedge/regedge/internal/token"
)

func newFrameCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "frame",
		Short: "Decode, check and encode config frames and bus datagrams",
	}
	cmd.AddCommand(newFrameDecodeCmd(), newFrameCheckCmd(), newFrameEncodeCmd())
	return cmd
}

// versionsFlag parses --versions 1,2 into a VersionSet.
func parseVersions(list string) (codec.VersionSet, error) {
	var vs codec.VersionSet
	for _, p := range strings.Split(list, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 8)
		if err != nil || n == 0 {
			return vs, usageErr("--versions %q: want a comma-separated list of versions 1..255", list)
		}
		vs.Add(uint8(n))
	}
	return vs, nil
}

func newFrameDecodeCmd() *cobra.Command {
	var datagram, asJSON bool
	var versions string
	var pubFiles []string
	cmd := &cobra.Command{
		Use:   "decode HEX",
		Short: "Decode and judge one frame (or datagram with --datagram)",
		Long: `Decode one frame, or with --datagram one config bus datagram, print its
fields with their names and the verdict of docs/protocol.md §2.3.

A datagram may carry a signature trailer (72 bytes: timestamp and Ed25519
signature); its timestamp is shown with its age by this machine's clock. With
--pub FILE (PKIX PEM, as bus.publicKeys; repeatable) the tool judges as an
agent with those keys: the verdict is unsigned when there is no trailer and
signature when no key verifies it. (Whether an agent finds it stale depends on
its clock when the datagram arrives: agents accept 30 s either way.)

Exit status: 0 when the verdict is ok, 1 when it is a reason word, 2 when the
argument is not hex.`,
		Example: `  regedge frame decode 010000000900000000000000020a
  regedge frame decode --datagram --pub /etc/regedge/bus.pub HEX`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vs, err := parseVersions(versions)
			if err != nil {
				return err
			}
			if len(pubFiles) > 0 && !datagram {
				return usageErr("--pub verifies a signed datagram: add --datagram")
			}
			var keys []ed25519.PublicKey
			for _, f := range pubFiles {
				k, err := token.ReadPublicKey(f)
				if err != nil {
					return usageErr("--pub: %v", strings.TrimPrefix(err.Error(), "token: "))
				}
				keys = append(keys, k)
			}
			b, err := codec.ParseHex(args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			rep := judge(b, datagram, &vs, keys, time.Now())
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				rep.writeText(w)
			}
			if rep.Verdict != "ok" {
				return &exitError{code: 1, err: errors.New(rep.Error), silent: true}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&datagram, "datagram", false, "the input is a bus datagram: 13-byte state, then one frame")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&versions, "versions", "1", "config versions the receiver accepts (datagrams)")
	cmd.Flags().StringArrayVar(&pubFiles, "pub", nil, "bus public key file: judge the datagram's signature as an agent with this key would")
	return cmd
}

func newFrameCheckCmd() *cobra.Command {
	var datagram bool
	var versions string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Judge hex lines from stdin: one verdict per line",
		Long: `Read hex strings from stdin, one per line, and print one verdict per line:
ok or the reason word (length, type, checksum, field, value, state, version).
Blank lines and lines starting with # are skipped; a 0x prefix and spaces
inside a line are allowed.

Exit status: 0 whatever the verdicts; 2, naming the line, when a line is not hex.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			vs, err := parseVersions(versions)
			if err != nil {
				return err
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			sc := bufio.NewScanner(cmd.InOrStdin())
			sc.Buffer(make([]byte, 64*1024), 1<<20)
			for n := 1; sc.Scan(); n++ {
				line := strings.TrimSpace(sc.Text())
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				b, err := codec.ParseHex(line)
				if err != nil {
					_ = out.Flush() // the verdicts so far; the bad line is the error to report
					return usageErr("line %d: %v", n, err)
				}
				var r codec.Reason
				if datagram {
					r = codec.CheckDatagram(b, &vs)
				} else {
					r = codec.CheckFrame(b)
				}
				fmt.Fprintln(out, r)
			}
			if err := sc.Err(); err != nil {
				_ = out.Flush()
				return usageErr("reading stdin: %v", err)
			}
			return out.Flush()
		},
	}
	cmd.Flags().BoolVar(&datagram, "datagram", false, "lines are bus datagrams")
	cmd.Flags().StringVar(&versions, "versions", "1", "config versions the receiver accepts (datagrams)")
	return cmd
}

// report is what `frame decode` prints, as text or JSON. Fields are filled
// only for input that passed every check: nothing half-parsed is shown.
type report struct {
	Hex     string         `json:"hex"`
	Kind    string         `json:"kind"`
	Verdict string         `json:"verdict"`
	Error   string         `json:"error,omitempty"`
	Sender  *config.State  `json:"sender,omitempty"`
	Frame   *frameReport   `json:"frame,omitempty"`
	Trailer *trailerReport `json:"trailer,omitempty"`
}

// trailerReport is a signed datagram's trailer.
type trailerReport struct {
	Timestamp uint64 `json:"timestamp"` // ms since the Unix epoch
	Time      string `json:"time"`
	Age       string `json:"age"` // by this machine's clock
	Signature string `json:"signature"`
	Verifies  *bool  `json:"verifies,omitempty"` // with --pub
}

type frameReport struct {
	Type     string        `json:"type"`
	TypeByte uint8         `json:"typeByte"`
	Field    *fieldReport  `json:"field,omitempty"`
	Value    *valueReport  `json:"value,omitempty"`
	Entries  []entryReport `json:"entries,omitempty"`
	Checksum uint8         `json:"checksum"`
}

type fieldReport struct {
	ID   uint32 `json:"id"`
	Name string `json:"name"`
}

type valueReport struct {
	Raw     uint64 `json:"raw"`
	Meaning string `json:"meaning,omitempty"`
}

type entryReport struct {
	Field   fieldReport `json:"field"`
	Value   uint64      `json:"value"`
	Meaning string      `json:"meaning,omitempty"`
}

// judge decodes b as a frame or a datagram. With keys (datagrams only) it
// also judges the signature as an agent with bus.publicKeys would, but for
// staleness, which depends on the moment the datagram arrives.
func judge(b []byte, datagram bool, vs *codec.VersionSet, keys []ed25519.PublicKey, now time.Time) report {
	rep := report{Hex: hex.EncodeToString(b), Kind: "frame", Verdict: "ok"}
	var f codec.Frame
	var err error
	body := b // the frame or datagram, without a trailer
	if datagram {
		rep.Kind = "datagram"
		var d codec.Datagram
		if err = codec.DecodeDatagramInto(&d, b, vs); err == nil {
			s := config.FromCodec(d.Sender)
			rep.Sender = &s
			f = d.Frame
			var trailer []byte
			body, trailer, _ = codec.SplitSigned(b)
			if trailer != nil {
				t, _ := codec.ParseTrailer(trailer) // 72 bytes: SplitSigned says so
				rep.Trailer = &trailerReport{
					Timestamp: t.Timestamp, Time: trailerTime(t.Timestamp), Age: trailerAge(t.Timestamp, now),
					Signature: hex.EncodeToString(t.Signature[:]),
				}
				if len(keys) > 0 {
					ok := false
					for _, k := range keys {
						ok = ok || t.Verify(body, k)
					}
					rep.Trailer.Verifies = &ok
					if !ok {
						rep.Verdict, rep.Error = "signature", "no --pub key verifies the signature"
					}
				}
			} else if len(keys) > 0 {
				rep.Verdict, rep.Error = "unsigned", "no signature trailer: an agent with bus.publicKeys refuses it"
			}
		}
	} else {
		err = codec.DecodeFrameInto(&f, b)
	}
	if err != nil {
		r, _ := codec.ReasonOf(err)
		rep.Verdict, rep.Error = r.String(), err.Error()
		return rep
	}
	rep.Frame = describe(&f, body[len(body)-1])
	return rep
}

func trailerTime(ms uint64) string {
	if ms > 1<<53 {
		return "far future"
	}
	return time.UnixMilli(int64(ms)).UTC().Format("2006-01-02T15:04:05.000Z")
}

// trailerAge says how far the timestamp is from now, e.g. "12.5s ago",
// "in 3s", with the agents' window beside it.
func trailerAge(ms uint64, now time.Time) string {
	const far = 100 * 365 * 24 * time.Hour
	n := now.UnixMilli()
	var d time.Duration
	switch {
	case ms > uint64(n)+uint64(far.Milliseconds()):
		d = -far
	case n > far.Milliseconds() && ms < uint64(n-far.Milliseconds()):
		d = far
	default:
		d = time.Duration(n-int64(ms)) * time.Millisecond
	}
	within := "within"
	if d > configbus.MaxSkew || d < -configbus.MaxSkew {
		within = "outside"
	}
	switch {
	case d >= far || d <= -far:
		return fmt.Sprintf("more than 100 years off (%s the agents' ±%v)", within, configbus.MaxSkew)
	case d < 0:
		return fmt.Sprintf("in %s (%s the agents' ±%v)", roughly(-d), within, configbus.MaxSkew)
	}
	return fmt.Sprintf("%s ago (%s the agents' ±%v)", roughly(d), within, configbus.MaxSkew)
}

// roughly prints a duration to the precision that matters for it.
func roughly(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	case d >= time.Minute:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Millisecond).String()
}

func describe(f *codec.Frame, checksum byte) *frameReport {
	fr := &frameReport{Type: f.Type.String(), TypeByte: uint8(f.Type), Checksum: checksum}
	switch f.Type {
	case codec.TypeBulk:
		for _, e := range f.Entries[:f.N] {
			fd, _ := codec.FieldByID(e.Field)
			fr.Entries = append(fr.Entries, entryReport{
				Field: fieldReport{uint32(e.Field), fd.Name}, Value: e.Value, Meaning: meaning(e.Field, e.Value),
			})
		}
		return fr
	case codec.TypeUpdate:
		fd, _ := codec.FieldByID(codec.FieldID(f.Field))
		fr.Field = &fieldReport{f.Field, fd.Name}
		fr.Value = &valueReport{f.Value, meaning(fd.ID, f.Value)}
	case codec.TypeFeatureToggle:
		bit, on := codec.ToggleValue(f.Value)
		state := "off"
		if on {
			state = "on"
		}
		fr.Field = &fieldReport{f.Field, "featureFlags"}
		fr.Value = &valueReport{f.Value, fmt.Sprintf("bit %d (%s) %s", bit, codec.FlagName(bit), state)}
	case codec.TypeResize:
		rows, cols := codec.ResizeValue(f.Value)
		fr.Field = &fieldReport{f.Field, "-"}
		fr.Value = &valueReport{f.Value, fmt.Sprintf("%dx%d (rows x cols)", rows, cols)}
	case codec.TypeHeartbeat:
		fr.Field = &fieldReport{f.Field, "-"}
		fr.Value = &valueReport{f.Value, heartbeatTime(f.Value)}
	case codec.TypeAck:
		fr.Field = &fieldReport{f.Field, "acknowledges " + codec.FrameType(f.Field).String()}
		fr.Value = &valueReport{Raw: f.Value}
	case codec.TypeError:
		fr.Field = &fieldReport{f.Field, "error code " + codec.ErrorCode(f.Field).String()}
		fr.Value = &valueReport{f.Value, strconv.Quote(f.ErrorMessage())}
	}
	return fr
}

func heartbeatTime(ms uint64) string {
	if ms > 1<<53 {
		return "far future"
	}
	return time.UnixMilli(int64(ms)).UTC().Format("2006-01-02T15:04:05.000Z")
}

func (r *report) writeText(w io.Writer) {
	if r.Sender != nil {
		fmt.Fprintln(w, "sender state:")
		writeStateTable(w, r.Sender.Codec())
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if fr := r.Frame; fr != nil {
		if fr.Entries != nil {
			fmt.Fprintf(tw, "type\t%s (0x%02x), %d entries\n", fr.Type, fr.TypeByte, len(fr.Entries))
			for i, e := range fr.Entries {
				fmt.Fprintf(tw, "entry %d\t%s (%d) = %s\n", i+1, e.Field.Name, e.Field.ID,
					strings.TrimSpace(formatValue(codec.FieldID(e.Field.ID), e.Value)+" "+e.Meaning))
			}
		} else {
			fmt.Fprintf(tw, "type\t%s (0x%02x)\n", fr.Type, fr.TypeByte)
			fmt.Fprintf(tw, "field\t%d (%s)\n", fr.Field.ID, fr.Field.Name)
			v := fmt.Sprintf("0x%016x", fr.Value.Raw)
			if fr.TypeByte == uint8(codec.TypeUpdate) {
				v = formatValue(codec.FieldID(fr.Field.ID), fr.Value.Raw)
			}
			fmt.Fprintf(tw, "value\t%s\t%s\n", v, fr.Value.Meaning)
		}
		fmt.Fprintf(tw, "checksum\t0x%02x\n", fr.Checksum)
	}
	if t := r.Trailer; t != nil {
		fmt.Fprintf(tw, "timestamp\t%d\t%s, %s\n", t.Timestamp, t.Time, t.Age)
		fmt.Fprintf(tw, "signature\t%s\n", t.Signature)
		if t.Verifies != nil {
			word := "verifies"
			if !*t.Verifies {
				word = "does not verify"
			}
			fmt.Fprintf(tw, "signed\t%s with --pub\n", word)
		}
	} else if r.Kind == "datagram" && r.Frame != nil {
		fmt.Fprintf(tw, "signed\tno (no trailer)\n")
	}
	fmt.Fprintf(tw, "verdict\t%s\n", r.Verdict)
	if r.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", r.Error)
	}
	tw.Flush()
}

func newFrameEncodeCmd() *cobra.Command {
	var datagram bool
	var stateDump, keyFile string
	cmd := &cobra.Command{
		Use:   "encode",
		Short: "Print the hex of a frame (or datagram with --datagram)",
		Long: `Print the hex of one frame. The frame is checked before it is printed:
a value that breaks a rule of docs/protocol.md is an error (exit 1), not a frame.
With --datagram the frame follows a 13-byte sender state (--state DUMP, or the
local config's state); --key FILE (PKCS#8 PEM Ed25519) then appends a
signature trailer stamped with this machine's clock.`,
		Example: `  regedge frame encode update terminalMode 2
  regedge frame encode bulk terminalMode=2 rows=40 cols=120
  regedge frame encode toggle 2 on
  regedge frame encode resize 40x120
  regedge frame encode heartbeat
  regedge frame encode --datagram update rows 40
  regedge frame encode --datagram --key bus.key update rows 40`,
	}
	cmd.PersistentFlags().BoolVar(&datagram, "datagram", false, "prefix the sender state: print a bus datagram")
	cmd.PersistentFlags().StringVar(&stateDump, "state", "", "sender state dump for --datagram (default: the local config's state)")
	cmd.PersistentFlags().StringVar(&keyFile, "key", "", "with --datagram: sign it with this Ed25519 private key (PKCS#8 PEM)")

	emit := func(cmd *cobra.Command, f codec.Frame) error {
		if err := f.Check(); err != nil {
			return err
		}
		out := f.Bytes()
		if datagram {
			s, err := senderState(stateDump)
			if err != nil {
				return err
			}
			out = codec.AppendDatagram(nil, s, &f)
			if keyFile != "" {
				key, err := token.ReadPrivateKey(keyFile)
				if err != nil {
					return usageErr("--key: %v", strings.TrimPrefix(err.Error(), "token: "))
				}
				out = codec.AppendSigned(nil, out, uint64(time.Now().UnixMilli()), key)
			}
		} else if keyFile != "" {
			return usageErr("--key signs a datagram: add --datagram")
		}
		fmt.Fprintln(cmd.OutOrStdout(), hex.EncodeToString(out))
		return nil
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "update FIELD VALUE",
			Short: "UPDATE one field (by name or id; value decimal or 0x hex)",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				e, err := parseEntry(args[0], args[1])
				if err != nil {
					return err
				}
				return emit(cmd, codec.Update(e.Field, e.Value))
			},
		},
		&cobra.Command{
			Use:   "bulk FIELD=VALUE...",
			Short: "BULK update of 1..16 fields",
			Args:  cobra.RangeArgs(1, codec.MaxBulkEntries),
			RunE: func(cmd *cobra.Command, args []string) error {
				entries, err := parseAssignments(args)
				if err != nil {
					return err
				}
				f, err := codec.Bulk(entries...)
				if err != nil {
					return err
				}
				return emit(cmd, f)
			},
		},
		&cobra.Command{
			Use:   "toggle BIT on|off",
			Short: "FEATURE_TOGGLE of one flag (bit 0..10 or its name)",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				bit, ok := codec.FlagBit(args[0])
				if !ok {
					return usageErr("toggle: %q is not a feature flag bit 0..%d or name", args[0], codec.NumFeatureFlags-1)
				}
				var on bool
				switch strings.ToLower(args[1]) {
				case "on", "1", "true":
					on = true
				case "off", "0", "false":
				default:
					return usageErr("toggle: %q: want on or off", args[1])
				}
				return emit(cmd, codec.Toggle(bit, on))
			},
		},
		&cobra.Command{
			Use:   "resize ROWSxCOLS",
			Short: "RESIZE the terminal, e.g. 40x120",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				r, c, ok := strings.Cut(strings.ToLower(args[0]), "x")
				rows, err1 := strconv.ParseUint(r, 10, 8)
				cols, err2 := strconv.ParseUint(c, 10, 8)
				if !ok || err1 != nil || err2 != nil || rows == 0 || cols == 0 {
					return usageErr("resize: %q: want ROWSxCOLS, each 1..255", args[0])
				}
				return emit(cmd, codec.Resize(uint8(rows), uint8(cols)))
			},
		},
		newHeartbeatCmd(emit),
		&cobra.Command{
			Use:   "ack TYPE",
			Short: "ACK of a frame type (update, toggle, resize, bulk or 0x..)",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				t, ok := codec.ParseFrameType(args[0])
				if !ok {
					return usageErr("ack: %q is not a frame type", args[0])
				}
				return emit(cmd, codec.Ack(t))
			},
		},
		&cobra.Command{
			Use:   "error CODE [MESSAGE]",
			Short: "ERROR frame: code 1..6, message up to 8 ASCII bytes",
			Args:  cobra.RangeArgs(1, 2),
			RunE: func(cmd *cobra.Command, args []string) error {
				code, err := strconv.ParseUint(args[0], 10, 32)
				if err != nil {
					return usageErr("error: %q: want a code 1..6", args[0])
				}
				msg := ""
				if len(args) == 2 {
					msg = args[1]
				}
				return emit(cmd, codec.ErrorFrame(codec.ErrorCode(code), msg))
			},
		},
	)
	return cmd
}

func newHeartbeatCmd(emit func(*cobra.Command, codec.Frame) error) *cobra.Command {
	var at int64
	cmd := &cobra.Command{
		Use:   "heartbeat",
		Short: "HEARTBEAT with the current time (or --at MS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t := at
			if t < 0 {
				t = time.Now().UnixMilli()
			}
			return emit(cmd, codec.Heartbeat(t))
		},
	}
	cmd.Flags().Int64Var(&at, "at", -1, "milliseconds since the Unix epoch (default now)")
	return cmd
}

func senderState(dump string) (codec.State, error) {
	if dump == "" {
		return localState("")
	}
	return codec.ParseDump(dump)
}

// parseEntry is codec.ParseEntry with its form errors as usage errors (exit 2).
func parseEntry(field, value string) (codec.Entry, error) {
	e, err := codec.ParseEntry(field, value)
	var se *codec.SyntaxError
	if errors.As(err, &se) {
		return e, usageErr("%s %q: %s", se.What, se.Input, se.Rule)
	}
	return e, err
}

func parseAssignments(args []string) ([]codec.Entry, error) {
	entries := make([]codec.Entry, 0, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, usageErr("%q: want FIELD=VALUE", a)
		}
		e, err := parseEntry(k, v)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, nil
}
