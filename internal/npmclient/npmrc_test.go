package npmclient

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/testutil"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseNpmrc(t *testing.T) {
	env := envOf(map[string]string{"NPM_TOKEN": "s3cret", "HOST": "r.example", "EMPTY": ""})
	for _, tc := range []struct {
		name, in string
		want     map[string]string
	}{
		{"plain", "registry=https://r.example/\n//r.example/:_authToken=abc\n", map[string]string{"registry": "https://r.example/", "//r.example/:_authToken": "abc"}},
		{"spaces and CRLF", "  registry = https://r.example/  \r\n", map[string]string{"registry": "https://r.example/"}},
		{"comments", "; a comment\n# another\nregistry=https://r.example/ ; trailing\nx=a#b\n", map[string]string{"registry": "https://r.example/", "x": "a"}},
		{"escaped comment chars", `x=a\;b\#c\\d\e`, map[string]string{"x": `a;b#c\d\e`}},
		{"double quotes are JSON", `x="a;b \"q\" \u0041"`, map[string]string{"x": `a;b "q" A`}},
		{"single quotes are literal", `x='a;b #c'`, map[string]string{"x": "a;b #c"}},
		{"bad JSON in double quotes stays", `x="a"b"`, map[string]string{"x": `"a"b"`}},
		{"later wins", "x=1\nx=2\n", map[string]string{"x": "2"}},
		{"sections are not top level", "x=1\n[sec]\ny=2\nx=3\n", map[string]string{"x": "1"}},
		{"not a section", "[a]b=1\n", map[string]string{"[a]b": "1"}},
		{"no value, lists, booleans", "flag\nlist[]=a\nb=true\nc=null\n=v\n", map[string]string{}},
		{"env in values", "//r.example/:_authToken=${NPM_TOKEN}\n", map[string]string{"//r.example/:_authToken": "s3cret"}},
		{"env in keys", "//${HOST}/:_authToken=t\n", map[string]string{"//r.example/:_authToken": "t"}},
		{"unset env kept", "x=${NOPE}\n", map[string]string{"x": "${NOPE}"}},
		{"unset optional env empty", "x=a${NOPE?}b\n", map[string]string{"x": "ab"}},
		{"set empty", "x=<${EMPTY}>\n", map[string]string{"x": "<>"}},
		{"escaped env", `x=\${NPM_TOKEN} \\${NPM_TOKEN} \\\${NPM_TOKEN}`, map[string]string{"x": `${NPM_TOKEN} ${NPM_TOKEN} \s3cret`}}, // ini turns \\ into \ first
		{"not expressions", "x=${} ${A B}x ${a${NPM_TOKEN}}\n", map[string]string{"x": "${} ${A B}x ${as3cret}"}},
		{"BOM and unicode space", "\ufeffx=1\u3000\n", map[string]string{"x": "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseNpmrc(tc.in, env); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseNpmrc(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// npmSide reads .npmrc texts with npm's own ini and env-replace modules,
// as @npmcli/config does for string settings, and returns the settings of
// each.
const npmSide = `
const path = require('path')
const npmDir = process.argv[1]
const ini = require(path.join(npmDir, 'node_modules/ini'))
const envReplace = require(path.join(npmDir, 'node_modules/@npmcli/config/lib/env-replace.js'))
const {inputs, env} = JSON.parse(require('fs').readFileSync(0, 'utf8'))
const out = inputs.map(text => {
  const res = {}
  for (const [key, value] of Object.entries(ini.parse(text))) {
    const k = envReplace(key, env)
    if (typeof value !== 'string' || value.trim() === 'undefined') { delete res[k]; continue }
    res[k] = envReplace(value.trim(), env)
  }
  return res
})
process.stdout.write(JSON.stringify(out))
`

// ParseNpmrc reads every text as npm does: a differential test against
// npm's own modules, on tricky texts and on random ones.
func TestParseNpmrcAgreesWithNpm(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		testutil.SkipOrFail(t, "node is not installed (.ci/run installs nodejs and npm)")
	}
	npmBin, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed")
	}
	real, _ := filepath.EvalSymlinks(npmBin)
	npmDir := filepath.Dir(filepath.Dir(real))
	if _, err := os.Stat(filepath.Join(npmDir, "node_modules/@npmcli/config/lib/env-replace.js")); err != nil {
		testutil.SkipOrFail(t, "npm's config modules are not where npm 11 keeps them: "+err.Error())
	}
	env := map[string]string{"A": "va", "B": "", "NPM_TOKEN": "tok;en#x"}
	inputs := []string{
		"registry=https://r.example/\n//r.example/:_authToken=${NPM_TOKEN}\n@s:registry=http://127.0.0.1:4873/\n",
		" a = b ; c\n\tb=\"x;y\"\nc='z#w'\n", `a=\;\#\\\x\`, `a="\u00e9\n"`, "a='\"q\"'", "a='1'", "a=\"'\"",
		"[s]\na=1\n[]\nb=2", "[s] \nc=3", " [s]\nd=4", "a[]=1\na[]=2\nb=1\nb[]=2", "__proto__=x\nconstructor=y\ntoString=z",
		"a=${A}${B}${C}${C?}${A?}", `a=\${A}\\${A}\\\${A}\\\\${A}`, "${A}=1\n${C}=2", "a=${${A}}${A${A}}${}${?}${A??}",
		"a=true\nb=false\nc=null\nd=undefined\ne=\"true\"", "\ufeffa=1\n\u00a0b=2\u2028\n\u2029c=3", "a\u2028=1\nb=\u20282",
		"a=b=c\n==\n=\nx", "a=\"\nb='\nc=\"\"", "\r\n\r\na=1\r\rb=2\n",
	}
	rng := rand.New(rand.NewPCG(14, 14))
	alphabet := []string{"a", "b", "=", " ", "\t", "\n", "\r\n", ";", "#", "\\", "\"", "'", "$", "{", "}", "?", "[", "]", "A", "B", "${A}", "${C?}", "//h/:_authToken", "\u3000", "é", "\u2028", "\ufeff"}
	for range 2000 {
		var b strings.Builder
		for range rng.IntN(24) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		inputs = append(inputs, b.String())
	}
	payload, _ := json.Marshal(map[string]any{"inputs": inputs, "env": env})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "-e", npmSide, npmDir)
	cmd.Stdin = strings.NewReader(string(payload))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	var theirs []map[string]string
	if err := json.Unmarshal(out, &theirs); err != nil {
		t.Fatal(err)
	}
	for i, in := range inputs {
		ours := ParseNpmrc(in, envOf(env))
		delete(theirs[i], "__proto__")
		if !reflect.DeepEqual(ours, theirs[i]) && !(len(ours) == 0 && len(theirs[i]) == 0) {
			t.Errorf("%q:\n ours %q\n npm  %q", in, ours, theirs[i])
		}
	}
}

func FuzzParseNpmrc(f *testing.F) {
	for _, s := range []string{"registry=https://r/\n//r/:_authToken=${T}\n", "[s]\na=1", `a="x\"y"`, `a=\${T}`, "a='b'#c", "${T}=1"} {
		f.Add(s)
	}
	env := envOf(map[string]string{"T": "tok"})
	f.Fuzz(func(t *testing.T, s string) {
		m := ParseNpmrc(s, env)
		for k, v := range m {
			if strings.ContainsAny(k, "\r\n") || strings.ContainsAny(v, "\r\n") && !strings.Contains(s, `"`) {
				t.Fatalf("%q -> %q=%q", s, k, v)
			}
		}
		if !strings.Contains(s, "${") && !strings.Contains(s, "\\") && !strings.ContainsAny(s, "\"'") {
			// without escapes, quotes or expressions every value is text of the input
			for _, v := range m {
				if !strings.Contains(s, v) {
					t.Fatalf("%q -> value %q not in the input", s, v)
				}
			}
		}
	})
}

func FuzzEnvReplace(f *testing.F) {
	for _, s := range []string{"${A}", `\${A}`, `\\${A?}`, "${${A}}", "$${A}}", "${A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		none := func(string) (string, bool) { return "", false }
		if !strings.Contains(s, "${") && envReplace(s, none) != s {
			t.Fatalf("%q changed without an expression", s)
		}
		// with every variable unset and no '?' or backslash, nothing changes
		if !strings.ContainsAny(s, `?\`) && envReplace(s, none) != s {
			t.Fatalf("%q changed with nothing set: %q", s, envReplace(s, none))
		}
	})
}

// The precedence of the places a registry and a token come from, as
// docs/cli.md gives it: flags, then REGEDGE_TOKEN, then the project's
// .npmrc, then the user's ($npm_config_userconfig or ~/.npmrc), then the
// local agent.
func TestSettingsPrecedence(t *testing.T) {
	const def = "http://127.0.0.1:4873/"
	type want struct {
		registry, from, token, tokenFrom string
		scope                            string // registry of @s, "" for none
	}
	for _, tc := range []struct {
		name                 string
		project, user, other string // .npmrc contents ("" = no file)
		env                  map[string]string
		flagReg, flagTok     string
		w                    want
	}{
		{name: "nothing", w: want{registry: def, from: "default"}},
		{name: "user file", user: "registry=https://user.example/\n//user.example/:_authToken=u\n",
			w: want{registry: "https://user.example/", from: "user", token: "u"}},
		{name: "project beats user", project: "registry=https://proj.example/npm\n//proj.example/npm/:_authToken=p\n",
			user: "registry=https://user.example/\n//user.example/:_authToken=u\n//proj.example/npm/:_authToken=u2\n",
			w:    want{registry: "https://proj.example/npm/", from: "project", token: "p"}},
		{name: "user token for the project's registry", project: "registry=https://proj.example/\n",
			user: "//proj.example/:_authToken=u\n", w: want{registry: "https://proj.example/", from: "project", token: "u"}},
		{name: "more specific key wins across files", project: "registry=https://proj.example/a/b/\n//proj.example/:_authToken=p\n",
			user: "//proj.example/a/:_authToken=u\n", w: want{registry: "https://proj.example/a/b/", from: "project", token: "u"}},
		{name: "token key for another path does not apply", project: "registry=https://proj.example/a/\n//proj.example/b/:_authToken=p\n",
			w: want{registry: "https://proj.example/a/", from: "project"}},
		{name: "port in key", project: "registry=http://127.0.0.1:4999/\n//127.0.0.1:4999/:_authToken=p\n//127.0.0.1/:_authToken=wrong\n",
			w: want{registry: "http://127.0.0.1:4999/", from: "project", token: "p"}},
		{name: "env expansion", project: "registry=https://${REG_HOST}/\n//${REG_HOST}/:_authToken=${NPM_TOKEN}\n",
			env: map[string]string{"REG_HOST": "env.example", "NPM_TOKEN": "from-env"},
			w:   want{registry: "https://env.example/", from: "project", token: "from-env"}},
		{name: "npm_config_userconfig replaces ~/.npmrc", user: "registry=https://user.example/\n", other: "registry=https://other.example/\n",
			env: map[string]string{"npm_config_userconfig": "OTHER"}, w: want{registry: "https://other.example/", from: "other"}},
		{name: "REGEDGE_TOKEN beats the files", project: "registry=https://proj.example/\n//proj.example/:_authToken=p\n",
			env: map[string]string{"REGEDGE_TOKEN": "env-tok"}, w: want{registry: "https://proj.example/", from: "project", token: "env-tok", tokenFrom: "REGEDGE_TOKEN"}},
		{name: "--token beats REGEDGE_TOKEN", project: "registry=https://proj.example/\n", env: map[string]string{"REGEDGE_TOKEN": "env-tok"},
			flagTok: "flag-tok", w: want{registry: "https://proj.example/", from: "project", token: "flag-tok", tokenFrom: "--token"}},
		{name: "--registry beats the files", project: "registry=https://proj.example/\n//edge.example/:_authToken=e\n", flagReg: "https://edge.example",
			w: want{registry: "https://edge.example/", from: "--registry", token: "e"}},
		{name: "scoped registry", project: "@s:registry=https://scoped.example/\n", w: want{registry: def, from: "default", scope: "https://scoped.example/"}},
		{name: "--registry beats a scoped registry", project: "@s:registry=https://scoped.example/\n", flagReg: "https://edge.example/",
			w: want{registry: "https://edge.example/", from: "--registry"}},
		{name: "quoted", project: "registry = \"https://q.example/\"\n", w: want{registry: "https://q.example/", from: "project"}},
		{name: "commented", project: "registry = https://q.example/ ; the company registry\n", w: want{registry: "https://q.example/", from: "project"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			proj, home := filepath.Join(base, "proj"), filepath.Join(base, "home")
			os.MkdirAll(proj, 0o755)
			os.MkdirAll(home, 0o755)
			files := map[string]string{"project": filepath.Join(proj, ".npmrc"), "user": filepath.Join(home, ".npmrc"), "other": filepath.Join(base, "other.npmrc")}
			for which, body := range map[string]string{"project": tc.project, "user": tc.user, "other": tc.other} {
				if body != "" {
					os.WriteFile(files[which], []byte(body), 0o600)
				}
			}
			env := map[string]string{"HOME": home}
			for k, v := range tc.env {
				if v == "OTHER" {
					v = files["other"]
				}
				env[k] = v
			}
			s, err := LoadSettings(SettingsInput{Dir: proj, Registry: tc.flagReg, Token: tc.flagTok, DefaultRegistry: def, Getenv: envOf(env)})
			if err != nil {
				t.Fatal(err)
			}
			from := s.RegistryFrom
			for which, p := range files {
				if from == p {
					from = which
				}
			}
			c := s.Client()
			tok := c.tokenFor(s.Registry, s.Registry.JoinPath("pkg"))
			got := want{registry: s.Registry.String(), from: from, token: tok, tokenFrom: s.TokenFrom}
			if u := c.RegistryFor("@s/x"); u != s.Registry {
				got.scope = u.String()
			}
			if got != tc.w {
				t.Fatalf("got  %+v\nwant %+v", got, tc.w)
			}
		})
	}
}

// An .npmrc that cannot be used is an error naming the file, before any
// request; so is a bad --registry.
func TestSettingsErrors(t *testing.T) {
	proj := t.TempDir()
	home := t.TempDir()
	env := envOf(map[string]string{"HOME": home})
	os.WriteFile(filepath.Join(proj, ".npmrc"), []byte("registry=${UNSET_REGISTRY}\n"), 0o600)
	_, err := LoadSettings(SettingsInput{Dir: proj, DefaultRegistry: "http://127.0.0.1:4873", Getenv: env})
	if !errors.Is(err, ErrNpmrc) || !strings.Contains(err.Error(), filepath.Join(proj, ".npmrc")) {
		t.Fatalf("unset variable in registry: %v", err)
	}
	os.WriteFile(filepath.Join(proj, ".npmrc"), []byte("@s:registry=ftp://x/\n"), 0o600)
	if _, err := LoadSettings(SettingsInput{Dir: proj, DefaultRegistry: "http://127.0.0.1:4873", Getenv: env}); !errors.Is(err, ErrNpmrc) || !strings.Contains(err.Error(), "@s:registry") {
		t.Fatalf("bad scoped registry: %v", err)
	}
	os.Remove(filepath.Join(proj, ".npmrc"))
	if _, err := LoadSettings(SettingsInput{Dir: proj, Registry: "ftp://nope", Getenv: env}); err == nil || !strings.Contains(err.Error(), "want an http(s) URL") {
		t.Fatalf("bad --registry: %v", err)
	}
	if err := os.Mkdir(filepath.Join(proj, ".npmrc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSettings(SettingsInput{Dir: proj, DefaultRegistry: "http://127.0.0.1:4873", Getenv: env}); !errors.Is(err, ErrNpmrc) {
		t.Fatalf("unreadable .npmrc: %v", err)
	}
	// the project being $HOME: its .npmrc is read once, as the user's
	s, err := LoadSettings(SettingsInput{Dir: home, DefaultRegistry: "http://127.0.0.1:4873", Getenv: env})
	if err != nil || len(s.Files) != 0 {
		t.Fatalf("%v %v", s, err)
	}
	os.WriteFile(filepath.Join(home, ".npmrc"), []byte("registry=https://h.example/\n"), 0o600)
	if s, err := LoadSettings(SettingsInput{Dir: home, DefaultRegistry: "http://127.0.0.1:4873", Getenv: env}); err != nil || len(s.Files) != 1 || s.Registry.Host != "h.example" {
		t.Fatalf("%v %v", s, err)
	}
}
