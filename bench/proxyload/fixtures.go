//go:build linux

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"
)

// The fixtures are generated, not stored: the origin process and the tool
// each build them from the same seeds (the tool to know what a correct
// answer is, the origin to serve it), and the tool checks the origin's bytes
// against its own before anything is measured.

// pkgSpec describes one package of the fixture registry.
type pkgSpec struct {
	name       string
	versions   int
	tarball    int // bytes of each version's .tgz (about)
	packument  int // the readme pads the packument up to this many bytes
	readmeMost int // the readme never grows past this
}

// specs: a small packument (6 versions), one with six 1 MiB tarballs, and
// the two large packuments (many versions, as typescript, @types/node or
// aws-sdk have) whose size is their versions, not their readme.
var specs = []pkgSpec{
	{name: "bench-small", versions: 6, tarball: 20 << 10, packument: 5 << 10, readmeMost: 4 << 10},
	{name: "bench-media", versions: 6, tarball: 1 << 20, packument: 5 << 10, readmeMost: 4 << 10},
	{name: "bench-1mb", versions: 1400, tarball: 600, packument: 1 << 20, readmeMost: 64 << 10},
	{name: "bench-10mb", versions: 15000, tarball: 600, packument: 10 << 20, readmeMost: 64 << 10},
}

// packument is one package's document as the origin serves it.
type packument struct {
	name     string
	body     []byte // plain JSON
	gz       []byte // the same, gzipped
	modified time.Time
	versions []string
	tarballs map[string]*tarball // by version
}

type tarball struct {
	body      []byte
	integrity string // sha512-BASE64
	shasum    string // hex SHA-1
	published time.Time
}

type fixtures struct {
	originBase string // http://127.0.0.1:PORT/
	pkgs       map[string]*packument
}

// tarballPath is where the origin serves a version's tarball.
func tarballPath(name, version string) string {
	return "/" + name + "/-/" + name + "-" + version + ".tgz"
}

// epoch is the first publish time of every fixture package.
var epoch = time.Date(2019, 3, 4, 5, 6, 7, 0, time.UTC)

func buildFixtures(originBase string) (*fixtures, error) {
	fx := &fixtures{originBase: originBase, pkgs: map[string]*packument{}}
	zw, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression)
	for _, s := range specs {
		p, err := buildPackage(s, originBase, zw)
		if err != nil {
			return nil, fmt.Errorf("fixture %s: %w", s.name, err)
		}
		fx.pkgs[s.name] = p
	}
	return fx, nil
}

func seedOf(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

func versionOf(i int) string {
	return fmt.Sprintf("%d.%d.%d", 1+i/1000, (i/50)%20, i%50)
}

// Version manifests, fields in the order the npm registry writes them.
type person struct {
	Name  string `json:"name"`
	Email string `json:"email,omitempty"`
}

type repository struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

type signature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

type dist struct {
	Integrity    string      `json:"integrity"`
	Shasum       string      `json:"shasum"`
	Tarball      string      `json:"tarball"`
	FileCount    int         `json:"fileCount"`
	UnpackedSize int         `json:"unpackedSize"`
	Signatures   []signature `json:"signatures"`
}

type manifest struct {
	Name         string            `json:"name"`
	Version      string            `json:"version"`
	License      string            `json:"license"`
	Dependencies map[string]string `json:"dependencies,omitempty"`
	ID           string            `json:"_id"`
	NpmVersion   string            `json:"_npmVersion"`
	Dist         dist              `json:"dist"`
	Maintainers  []person          `json:"maintainers"`
}

// orderedMap marshals its pairs in order (versions in publish order, as
// registries send them), each value already JSON.
type orderedMap []struct {
	key   string
	value json.RawMessage
}

func (m orderedMap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, kv := range m {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(kv.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(kv.value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (m *orderedMap) add(key string, v any) {
	raw, err := marshal(v)
	if err != nil {
		panic(err) // fixture types always marshal
	}
	*m = append(*m, struct {
		key   string
		value json.RawMessage
	}{key, raw})
}

// marshal is json.Marshal without HTML escaping (registries send < and >
// as they are).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

type document struct {
	ID          string     `json:"_id"`
	Rev         string     `json:"_rev"`
	Name        string     `json:"name"`
	DistTags    orderedMap `json:"dist-tags"`
	Versions    orderedMap `json:"versions"`
	Time        orderedMap `json:"time"`
	Maintainers []person   `json:"maintainers"`
	Description string     `json:"description"`
	Homepage    string     `json:"homepage"`
	Keywords    []string   `json:"keywords"`
	Repository  repository `json:"repository"`
	Author      person     `json:"author"`
	Bugs        struct {
		URL string `json:"url"`
	} `json:"bugs"`
	License        string `json:"license"`
	Readme         string `json:"readme"`
	ReadmeFilename string `json:"readmeFilename"`
}

var maintainers = []person{{Name: "bench-author", Email: "author@example.com"}, {Name: "co-maintainer", Email: "co@example.org"}}

func buildPackage(s pkgSpec, originBase string, zw *gzip.Writer) (*packument, error) {
	rnd := rand.New(rand.NewPCG(seedOf(s.name), 11))
	p := &packument{name: s.name, tarballs: map[string]*tarball{}}
	repo := repository{Type: "git", URL: "git+https://github.com/example/" + s.name + ".git"}
	doc := document{
		ID: s.name, Name: s.name, Rev: fmt.Sprintf("%d-%032x", s.versions, rnd.Uint64()),
		Maintainers: maintainers, Description: "A fixture package for the regedge proxy load run",
		Homepage: "https://github.com/example/" + s.name + "#readme",
		Keywords: []string{"registry", "fixture", "benchmark"}, Repository: repo,
		Author: maintainers[0], License: "MIT", ReadmeFilename: "README.md",
	}
	doc.Bugs.URL = "https://github.com/example/" + s.name + "/issues"
	var times orderedMap
	times.add("created", epoch.Format(time.RFC3339Nano))
	for i := 0; i < s.versions; i++ {
		v := versionOf(i)
		published := epoch.Add(time.Duration(i) * 97 * time.Minute)
		m := manifest{
			Name: s.name, Version: v, License: "MIT",
			ID: s.name + "@" + v, NpmVersion: "10.2.4",
			Maintainers: maintainers[:1],
		}
		if n := rnd.IntN(3); n > 0 {
			m.Dependencies = map[string]string{}
			for j := 0; j < n; j++ {
				m.Dependencies[fmt.Sprintf("dep-%c", 'a'+rnd.IntN(26))] = fmt.Sprintf("^%d.%d.0", rnd.IntN(5), rnd.IntN(20))
			}
		}
		tb, files, unpacked, err := buildTarball(s, m, rnd, zw)
		if err != nil {
			return nil, err
		}
		sum512 := sha512.Sum512(tb)
		sum1 := sha1.Sum(tb)
		sig := make([]byte, 71)
		for j := range sig {
			sig[j] = byte(rnd.Uint32())
		}
		t := &tarball{body: tb, integrity: "sha512-" + base64.StdEncoding.EncodeToString(sum512[:]),
			shasum: hex.EncodeToString(sum1[:]), published: published}
		m.Dist = dist{
			Integrity: t.integrity, Shasum: t.shasum,
			Tarball:   strings.TrimSuffix(originBase, "/") + tarballPath(s.name, v),
			FileCount: files, UnpackedSize: unpacked,
			Signatures: []signature{{KeyID: "SHA256:jl3bwswu80PjjokCgh0o2w5c2U4LhQAE57gj9cz1kzA", Sig: base64.StdEncoding.EncodeToString(sig)}},
		}
		doc.Versions.add(v, m)
		times.add(v, published.Format("2006-01-02T15:04:05.000Z"))
		p.versions = append(p.versions, v)
		p.tarballs[v] = t
		p.modified = published
	}
	latest := p.versions[len(p.versions)-1]
	doc.DistTags.add("latest", latest)
	doc.Time = append(orderedMap{times[0], {key: "modified", value: mustMarshal(p.modified.Format("2006-01-02T15:04:05.000Z"))}}, times[1:]...)

	// Pad with the readme: a prefix of one long text, grown until the
	// packument reaches its size (JSON escapes make it a little longer
	// than the raw text) or the readme its limit.
	full := readme(s.name, rnd, s.readmeMost)
	const leastReadme = 200 // every package has some readme
	n := min(leastReadme, len(full))
	var body []byte
	for try := 0; try < 10; try++ {
		doc.Readme = prefix(full, n)
		var err error
		if body, err = marshal(doc); err != nil {
			return nil, err
		}
		short := s.packument - len(body)
		if short < 16 && short > -16 || n >= len(full) && short > 0 || n <= leastReadme && short < 0 {
			break
		}
		n = min(max(n+short*9/10, leastReadme), len(full))
	}
	// The origin's base appears in tarball URLs and nowhere else, so a
	// plain substring replacement (nginx's sub_filter) is a correct rewrite
	// of these documents.
	if n := bytes.Count(body, []byte(originBase)); n != s.versions {
		return nil, fmt.Errorf("origin base appears %d times, want %d (once per tarball URL)", n, s.versions)
	}
	p.body = body
	var gz bytes.Buffer
	zw.Reset(&gz)
	_, _ = zw.Write(body) // into memory
	if err := zw.Close(); err != nil {
		return nil, err
	}
	p.gz = gz.Bytes()
	return p, nil
}

func mustMarshal(v any) json.RawMessage {
	b, err := marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// tarFixedTime is npm's fixed mtime for packed files.
var tarFixedTime = time.Date(1985, 10, 26, 8, 15, 0, 0, time.UTC)

// buildTarball packs package/package.json, a README and a file of random
// bytes (so the gzip stays about s.tarball bytes), as npm pack lays it out.
// It returns the .tgz, its file count and unpacked size.
func buildTarball(s pkgSpec, m manifest, rnd *rand.Rand, zw *gzip.Writer) ([]byte, int, int, error) {
	pj, _ := json.MarshalIndent(struct {
		Name         string            `json:"name"`
		Version      string            `json:"version"`
		Description  string            `json:"description"`
		Main         string            `json:"main"`
		License      string            `json:"license"`
		Repository   repository        `json:"repository"`
		Dependencies map[string]string `json:"dependencies,omitempty"`
	}{m.Name, m.Version, "A fixture package", "index.js", m.License,
		repository{"git", "git+https://github.com/example/" + m.Name + ".git"}, m.Dependencies}, "", "  ")
	rd := []byte("# " + m.Name + "\n\nA fixture package.\n")
	payload := max(s.tarball-1100, 64)
	seed := rnd.Uint64()
	for try := 0; ; try++ {
		data := make([]byte, payload)
		prng := rand.New(rand.NewPCG(seed, uint64(payload)))
		for i := 0; i+8 <= len(data); i += 8 {
			v := prng.Uint64()
			for j := 0; j < 8; j++ {
				data[i+j] = byte(v >> (8 * j))
			}
		}
		var tb bytes.Buffer
		zw.Reset(&tb)
		tw := tar.NewWriter(zw)
		files := []struct {
			name string
			body []byte
		}{{"package/package.json", pj}, {"package/README.md", rd}, {"package/lib/data.bin", data}}
		unpacked := 0
		for _, f := range files {
			if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: tarFixedTime, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
				return nil, 0, 0, err
			}
			_, _ = tw.Write(f.body) // into memory
			unpacked += len(f.body)
		}
		if err := tw.Close(); err != nil {
			return nil, 0, 0, err
		}
		if err := zw.Close(); err != nil {
			return nil, 0, 0, err
		}
		// Small tarballs take the first size; large ones converge on the
		// target within a few bytes (random bytes do not compress).
		off := s.tarball - tb.Len()
		if s.tarball < 4096 || try == 3 || off > -8 && off < 8 {
			return tb.Bytes(), len(files), unpacked, nil
		}
		payload = max(payload+off, 64)
	}
}

var words = strings.Fields(`the registry edge serves packuments and tarballs to npm bun pnpm and yarn clients
install with a lockfile whose resolved URLs point at the mirror so every tarball is fetched through it
configuration options are read from a file environment variables and flags in that order of precedence
caching keeps immutable tarballs forever while packuments are revalidated after their freshness ends
the API returns a promise that resolves once the value is ready and rejects with a typed error otherwise
café naïve résumé — “quoted” ünïcödé text appears in real readmes as well as backslashes \ and "quotes"`)

// readme is markdown of about n bytes (before JSON escaping).
func readme(name string, rnd *rand.Rand, n int) string {
	var b strings.Builder
	b.WriteString("# " + name + "\n\n[![npm](https://img.shields.io/npm/v/" + name + ".svg)](https://www.npmjs.com/package/" + name + ")\n\n")
	section := 0
	for b.Len() < n {
		switch rnd.IntN(8) {
		case 0:
			section++
			fmt.Fprintf(&b, "\n## Section %d\n\n", section)
		case 1:
			fmt.Fprintf(&b, "```js\nconst m = require('%s');\nm.run({ retries: %d, path: \"C:\\\\tmp\\\\x\" });\n```\n\n", name, rnd.IntN(9))
		default:
			for i := 0; i < 12+rnd.IntN(30); i++ {
				b.WriteString(words[rnd.IntN(len(words))])
				b.WriteByte(' ')
			}
			b.WriteString(".\n\n")
		}
	}
	return prefix(b.String(), n)
}

// prefix is s cut to at most n bytes, never inside a UTF-8 sequence.
func prefix(s string, n int) string {
	if n >= len(s) {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
