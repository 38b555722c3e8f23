package userproxy

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func testRebaser(t testing.TB, upstream string, extra ...string) *rebaser {
	t.Helper()
	rb := &rebaser{edge: "http://edge.test:4873"}
	for _, s := range append([]string{upstream}, extra...) {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		rb.origins = append(rb.origins, originOf(u))
	}
	return rb
}

// rewriteAll runs body through a rewriter in writes cut at the given
// offsets.
func rewriteAll(t testing.TB, rb *rebaser, body []byte, cuts []int) ([]byte, *rewriter) {
	t.Helper()
	var out bytes.Buffer
	w := newRewriter(&out, rb)
	prev := 0
	for _, c := range cuts {
		if c < prev || c > len(body) {
			continue
		}
		if _, err := w.Write(body[prev:c]); err != nil {
			t.Fatal(err)
		}
		prev = c
	}
	if _, err := w.Write(body[prev:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), w
}

// referenceRewrite is the decoding rewrite the byte scan must agree with:
// every string value of a "tarball" key, at any depth, rebased.
func referenceRewrite(rb *rebaser, v any) (any, int) {
	n := 0
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && k == "tarball" {
					if r, _, ok := rb.rebase(s); ok {
						x[k] = r
						n++
						continue
					}
				}
				x[k] = walk(e)
			}
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		}
		return v
	}
	return walk(v), n
}

func decodeJSON(t testing.TB, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode: %v\n%s", err, b)
	}
	return v
}

func TestRewriteRebasesTarballURLs(t *testing.T) {
	rb := testRebaser(t, "https://registry.npmjs.org/", "https://registry.npmjs.com")
	cases := []struct {
		name, in, want string
	}{
		{"default port omitted", `{"versions":{"1.0.0":{"dist":{"tarball":"https://registry.npmjs.org/a/-/a-1.0.0.tgz"}}}}`,
			`{"versions":{"1.0.0":{"dist":{"tarball":"http://edge.test:4873/a/-/a-1.0.0.tgz"}}}}`},
		{"default port given", `{"dist":{"tarball":"https://registry.npmjs.org:443/a/-/a-1.0.0.tgz"}}`,
			`{"dist":{"tarball":"http://edge.test:4873/a/-/a-1.0.0.tgz"}}`},
		{"host case", `{"dist":{"tarball":"HTTPS://Registry.NPMJS.org/a/-/a-1.0.0.tgz"}}`,
			`{"dist":{"tarball":"http://edge.test:4873/a/-/a-1.0.0.tgz"}}`},
		{"tarballHosts alias", `{"dist":{"tarball":"https://registry.npmjs.com/@s/a/-/a-1.0.0.tgz"}}`,
			`{"dist":{"tarball":"http://edge.test:4873/@s/a/-/a-1.0.0.tgz"}}`},
		{"escaped slashes and space", `{"dist": { "tarball" :	"https:\/\/registry.npmjs.org\/a\/-\/a-1.0.0.tgz" }}`,
			`{"dist": { "tarball" :	"http://edge.test:4873/a/-/a-1.0.0.tgz" }}`},
		{"other port", `{"dist":{"tarball":"https://registry.npmjs.org:8443/a/-/a-1.0.0.tgz"}}`,
			`{"dist":{"tarball":"https://registry.npmjs.org:8443/a/-/a-1.0.0.tgz"}}`},
		{"other scheme", `{"dist":{"tarball":"http://registry.npmjs.org/a/-/a-1.0.0.tgz"}}`,
			`{"dist":{"tarball":"http://registry.npmjs.org/a/-/a-1.0.0.tgz"}}`},
		{"other host", `{"dist":{"tarball":"https://evil.example/a/-/a-1.0.0.tgz"}}`,
			`{"dist":{"tarball":"https://evil.example/a/-/a-1.0.0.tgz"}}`},
		{"tarball text in a readme", `{"readme":"\"tarball\": \"https://registry.npmjs.org/x.tgz\"","dist":{"tarball":"https://registry.npmjs.org/a.tgz"}}`,
			`{"readme":"\"tarball\": \"https://registry.npmjs.org/x.tgz\"","dist":{"tarball":"http://edge.test:4873/a.tgz"}}`},
		{"tarball as a value", `{"x":"tarball","y":"https://registry.npmjs.org/a.tgz"}`,
			`{"x":"tarball","y":"https://registry.npmjs.org/a.tgz"}`},
		{"escaped key", `{"tar\u0062all":"https://registry.npmjs.org/a.tgz"}`,
			`{"tar\u0062all":"http://edge.test:4873/a.tgz"}`},
		{"not JSON", `tarball":"https://registry.npmjs.org/a.tgz"`, `tarball":"https://registry.npmjs.org/a.tgz"`},
		{"array at top", `["tarball",{"tarball":"https://registry.npmjs.org/a.tgz"}]`, `["tarball",{"tarball":"https://registry.npmjs.org/a.tgz"}]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for cut := 0; cut <= len(tc.in); cut++ {
				got, _ := rewriteAll(t, rb, []byte(tc.in), []int{cut})
				if string(got) != tc.want {
					t.Fatalf("cut at %d:\n got %s\nwant %s", cut, got, tc.want)
				}
			}
		})
	}
}

func TestRewritePathPrefix(t *testing.T) {
	rb := testRebaser(t, "https://host.example/npm/")
	in := `{"a":{"tarball":"https://host.example/npm/a/-/a-1.tgz"},"b":{"tarball":"https://host.example/other/b-1.tgz"}}`
	want := `{"a":{"tarball":"http://edge.test:4873/a/-/a-1.tgz"},"b":{"tarball":"https://host.example/other/b-1.tgz"}}`
	if got, _ := rewriteAll(t, rb, []byte(in), nil); string(got) != want {
		t.Fatalf("got %s", got)
	}
}

func TestRewriteLearnsIntegrity(t *testing.T) {
	rb := testRebaser(t, "http://up.test")
	in := `{"versions":{"1.0.0":{"dist":{"integrity":"sha512-AAA=","shasum":"x","tarball":"http://up.test/a/-/a-1.0.0.tgz"}},` +
		`"2.0.0":{"dist":{"tarball":"http://up.test/a/-/a-2.0.0.tgz","integrity":"sha512-BBB="}},"3.0.0":{"dist":{"tarball":"http://else/a-3.tgz","integrity":"sha512-CCC="}}}}`
	got := map[string]string{}
	var out bytes.Buffer
	w := newRewriter(&out, rb)
	w.learn = func(path, integrity string) { got[path] = integrity }
	w.Write([]byte(in))
	w.Close()
	want := map[string]string{"/a/-/a-1.0.0.tgz": "sha512-AAA=", "/a/-/a-2.0.0.tgz": "sha512-BBB="}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("learned %v, want %v", got, want)
	}
	if !w.complete() {
		t.Fatal("a whole packument is not complete")
	}
}

func TestRewriteTruncatedIsIncomplete(t *testing.T) {
	rb := testRebaser(t, "http://up.test")
	in := []byte(`{"versions":{"1.0.0":{"dist":{"tarball":"http://up.test/a/-/a-1.0.0.tgz"}}}}`)
	for k := 0; k < len(in); k++ {
		out, w := rewriteAll(t, rb, in[:k], nil)
		if w.complete() {
			t.Fatalf("%q judged complete", in[:k])
		}
		// What was held back comes out as it was: never half a URL.
		if !bytes.HasPrefix(in[:k], out) && !bytes.Contains(out, []byte("edge.test")) {
			t.Fatalf("%q became %q", in[:k], out)
		}
	}
}

// genPackument writes a random packument-like document from r: random key
// order, whitespace, escapes (\/ and \u), unicode, tarball text inside
// strings, URLs on and off the upstream's origins.
func genPackument(r *rand.Rand) []byte {
	var b bytes.Buffer
	ws := func() {
		for range r.IntN(3) {
			b.WriteByte(" \t\n\r"[r.IntN(4)])
		}
	}
	str := func(s string) {
		b.WriteByte('"')
		for _, c := range s {
			switch {
			case c == '"' || c == '\\':
				b.WriteByte('\\')
				b.WriteRune(c)
			case c == '/' && r.IntN(2) == 0:
				b.WriteString(`\/`)
			case c < 0x20:
				fmt.Fprintf(&b, `\u%04x`, c)
			case c < 0x80 && r.IntN(10) == 0:
				fmt.Fprintf(&b, `\u%04x`, c)
			default:
				b.WriteRune(c)
			}
		}
		b.WriteByte('"')
	}
	urls := []string{
		"http://up.test/%s/-/%s-%d.tgz", "http://UP.test:80/%s/-/%s-%d.tgz", "https://alias.test/%s/-/%s-%d.tgz",
		"https://alias.test:443/%s/-/%s-%d.tgz", "http://up.test:8080/%s/-/%s-%d.tgz", "https://up.test/%s/-/%s-%d.tgz",
		"http://other.test/%s/-/%s-%d.tgz", "not a url %s %s %d", "http://up.test/%s/-/é \"%s\"-%d.tgz",
	}
	texts := []string{"plain", "tarball", `"tarball": "http://up.test/x.tgz"`, "ünïcode ✓", "line\nbreak\\", "\u2028", "{\"a\":1}"}
	name := []string{"left-pad", "@scope/pkg", "a"}[r.IntN(3)]
	var obj func(depth int)
	value := func(depth int) {
		switch k := r.IntN(8); {
		case k == 0 && depth < 4:
			obj(depth + 1)
		case k == 1:
			b.WriteByte('[')
			for i := range r.IntN(3) {
				if i > 0 {
					b.WriteByte(',')
				}
				ws()
				str(texts[r.IntN(len(texts))])
			}
			b.WriteByte(']')
		case k == 2:
			fmt.Fprintf(&b, "%d", r.IntN(1000)-500)
		case k == 3:
			b.WriteString([]string{"true", "false", "null", "1.5e3"}[r.IntN(4)])
		default:
			str(texts[r.IntN(len(texts))])
		}
	}
	obj = func(depth int) {
		b.WriteByte('{')
		n := r.IntN(5)
		used := map[int]bool{} // no duplicate keys, as in real packuments
		for i := 0; i < n; i++ {
			kind := r.IntN(5)
			other := r.IntN(6)
			if kind > 2 {
				kind = 3 + other
			}
			if used[kind] {
				continue
			}
			used[kind] = true
			if len(used) > 1 {
				b.WriteByte(',')
			}
			ws()
			switch kind {
			case 0:
				str("tarball")
				ws()
				b.WriteByte(':')
				ws()
				str(fmt.Sprintf(urls[r.IntN(len(urls))], name, name, r.IntN(9)))
			case 1:
				str("integrity")
				ws()
				b.WriteByte(':')
				ws()
				str("sha512-" + strings.Repeat("A", r.IntN(8)) + "==")
			case 2:
				str("dist")
				b.WriteByte(':')
				obj(depth + 1)
			default:
				str([]string{"name", "readme", "tarballs", "x-tarball", "versions", "é"}[other])
				ws()
				b.WriteByte(':')
				ws()
				value(depth)
			}
			ws()
		}
		b.WriteByte('}')
	}
	ws()
	obj(0)
	ws()
	return b.Bytes()
}

func FuzzRewriteDifferential(f *testing.F) {
	for i := range 8 {
		f.Add(uint64(i), uint64(i*7919), uint16(i*13))
	}
	rb := testRebaser(f, "http://up.test", "https://alias.test")
	f.Fuzz(func(t *testing.T, seed1, seed2 uint64, cutSeed uint16) {
		r := rand.New(rand.NewPCG(seed1, seed2))
		in := genPackument(r)
		cr := rand.New(rand.NewPCG(uint64(cutSeed), 1))
		var cuts []int
		for range cr.IntN(6) {
			cuts = append(cuts, cr.IntN(len(in)+1))
		}
		whole, w := rewriteAll(t, rb, in, nil)
		split, _ := rewriteAll(t, rb, in, cuts)
		if !bytes.Equal(whole, split) {
			t.Fatalf("depends on write boundaries %v:\n%s\n%s", cuts, whole, split)
		}
		if !w.complete() {
			t.Fatalf("a whole document judged incomplete: %s", in)
		}
		want, n := referenceRewrite(rb, decodeJSON(t, in))
		got := decodeJSON(t, whole)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("differs from the decoding rewrite:\n in %s\nout %s", in, whole)
		}
		if n == 0 && !bytes.Equal(in, whole) {
			t.Fatalf("nothing to rebase but bytes changed:\n in %s\nout %s", in, whole)
		}
		if n != w.rewritten {
			t.Fatalf("rebased %d URLs, the reference %d", w.rewritten, n)
		}
		// Truncated: never judged complete, never a panic.
		k := cr.IntN(len(in))
		if _, tw := rewriteAll(t, rb, in[:k], nil); tw.complete() && json.Valid(in[:k]) == false {
			t.Fatalf("truncated %q judged complete", in[:k])
		}
	})
}

// FuzzRewriteBytes: arbitrary bytes never panic, the output never depends
// on how the input was cut, and valid JSON objects agree with the decoding
// rewrite.
func FuzzRewriteBytes(f *testing.F) {
	f.Add([]byte(`{"dist":{"tarball":"http://up.test/a.tgz"}}`), uint16(3))
	f.Add([]byte(`{"tarball":"http:\/\/up.test\/a.tgz","x":"\\\"tarball\":\"http://up.test/b"}`), uint16(9))
	f.Add([]byte(`{"tarball" :"\ud800http://up.test/a.tgz"}`), uint16(1))
	rb := testRebaser(f, "http://up.test")
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		whole, _ := rewriteAll(t, rb, in, nil)
		split, _ := rewriteAll(t, rb, in, []int{int(cut) % (len(in) + 1), int(cut/7) % (len(in) + 1)})
		if !bytes.Equal(whole, split) {
			t.Fatalf("depends on write boundaries:\n%q\n%q", whole, split)
		}
		if !json.Valid(in) || len(bytes.TrimLeft(in, " \t\r\n")) == 0 || bytes.TrimLeft(in, " \t\r\n")[0] != '{' {
			return
		}
		want, _ := referenceRewrite(rb, decodeJSON(t, in))
		if got := decodeJSON(t, whole); !reflect.DeepEqual(got, want) {
			t.Fatalf("differs from the decoding rewrite:\n in %q\nout %q", in, whole)
		}
	})
}

func TestRewriteGzippedPackument(t *testing.T) {
	rb := testRebaser(t, "http://up.test")
	in := []byte(`{"versions":{"1.0.0":{"dist":{"tarball":"http://up.test/a/-/a-1.0.0.tgz"}}}}`)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(in)
	zw.Close()
	var out bytes.Buffer
	if err := rewriteBody(&out, bytes.NewReader(gz.Bytes()), "gzip", rb, nil); err != nil {
		t.Fatal(err)
	}
	if want := `{"versions":{"1.0.0":{"dist":{"tarball":"http://edge.test:4873/a/-/a-1.0.0.tgz"}}}}`; out.String() != want {
		t.Fatalf("got %s", out.String())
	}
}

func BenchmarkRewrite(b *testing.B) {
	rb := testRebaser(b, "http://up.test")
	var doc bytes.Buffer
	doc.WriteString(`{"name":"big","readme":"` + strings.Repeat("lorem ipsum ", 2000) + `","versions":{`)
	for i := range 3000 {
		if i > 0 {
			doc.WriteByte(',')
		}
		fmt.Fprintf(&doc, `"1.0.%d":{"name":"big","version":"1.0.%d","dependencies":{"a":"^1.0.0","b":"~2.1.0"},"dist":{"integrity":"sha512-%s","shasum":"%040d","tarball":"http://up.test/big/-/big-1.0.%d.tgz"}}`,
			i, i, strings.Repeat("Q", 86), i, i)
	}
	doc.WriteString(`}}`)
	body := doc.Bytes()
	b.Run("bytescan", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			w := newRewriter(discard{}, rb)
			for off := 0; off < len(body); off += 32 << 10 {
				w.Write(body[off:min(off+32<<10, len(body))])
			}
			w.Close()
		}
	})
	b.Run("decode-encode", func(b *testing.B) { // the old way, as a baseline
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var v any
			json.Unmarshal(body, &v)
			v, _ = referenceRewrite(rb, v)
			json.Marshal(v)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// FuzzRebaseFastPath: the parser-free path agrees with url.Parse's.
func FuzzRebaseFastPath(f *testing.F) {
	for _, s := range []string{"http://up.test/a/-/a-1.tgz", "HTTP://UP.TEST:80/a", "http://up.test:8080/a", "https://alias.test:443/@s/a/-/a.tgz",
		"http://user@up.test/a", "http://up.test", "http://up.test/npm/a", "http://up.test./a", "http://[::1]:80/a"} {
		f.Add(s)
	}
	rb := testRebaser(f, "http://up.test", "https://alias.test", "http://[::1]", "http://pre.test/npm/")
	f.Fuzz(func(t *testing.T, u string) {
		p, ok, sure := rb.fastPath(u)
		if !sure {
			return
		}
		want, wantPath, wantOK := rb.slowRebase(u)
		if ok != wantOK || ok && (p != wantPath || rb.edge+p != want) {
			t.Fatalf("%q: fast %q %v, url.Parse %q %q %v", u, p, ok, want, wantPath, wantOK)
		}
	})
}
