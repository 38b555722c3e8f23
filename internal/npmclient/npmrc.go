package npmclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// ParseNpmrc reads an .npmrc as npm reads it (the ini package, then
// @npmcli/config's handling of string settings): key=value lines, both
// sides trimmed; lines starting with ';' or '#' are comments, and an
// unquoted value ends at an unescaped ';' or '#' ('\;', '\#' and '\\'
// are escapes); a quoted value is read as JSON ('...' after dropping the
// single quotes) and kept as written when that fails; a later key wins.
// Keys under a [section], list keys (key[]=, and a key once a list), keys
// without a value and values that are not strings (true, false, null,
// numbers, JSON objects) or are "undefined" are left out, as npm drops them
// for the settings read here. ${NAME} in keys and values is expanded with
// env (envReplace).
func ParseNpmrc(data string, env func(string) (string, bool)) map[string]string {
	type entry struct {
		value  string
		str    bool // a string, not a boolean, null, number, object or list
		isList bool
	}
	var order []string
	raw := map[string]*entry{}
	inSection := false
	for _, line := range strings.FieldsFunc(data, func(r rune) bool { return r == '\n' || r == '\r' }) {
		trimmed := jsTrim(line)
		if trimmed == "" || trimmed[0] == ';' || trimmed[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			if end := strings.IndexByte(line, ']'); end > 0 && jsTrim(line[end+1:]) == "" {
				inSection = true
				continue
			}
		}
		rawKey, rawValue, hasValue := strings.Cut(line, "=")
		if rawKey == "" || (hasValue && strings.ContainsAny(rawValue, "\u2028\u2029")) {
			// ini's line pattern needs a key; its value part (JS '.') stops
			// at these separators, so such a line does not match at all
			continue
		}
		if inSection {
			continue
		}
		key, keyIsString := iniUnquote(rawKey)
		if !keyIsString {
			key = jsTrim(rawKey) // ini uses the JSON value as a key; only strings matter here
		}
		list := len(key) > 2 && strings.HasSuffix(key, "[]")
		if list {
			key = key[:len(key)-2]
		}
		if key == "__proto__" {
			continue
		}
		e := raw[key]
		if e == nil {
			e = &entry{}
			raw[key] = e
			order = append(order, key)
		}
		if list || e.isList {
			// a list from here on: not a setting read here
			e.isList, e.str = true, false
			continue
		}
		if !hasValue {
			e.str = false // ini makes a key without a value true
			continue
		}
		e.value, e.str = iniUnquote(rawValue)
		switch e.value {
		case "true", "false", "null":
			e.str = false
		}
	}
	out := map[string]string{}
	for _, i := range jsKeyOrder(order) {
		e := raw[order[i]]
		key := envReplace(order[i], env)
		value := jsTrim(e.value)
		if !e.str || value == "undefined" || key == "__proto__" {
			delete(out, key)
			continue
		}
		out[key] = envReplace(value, env)
	}
	return out
}

// jsTrim is JavaScript's String.prototype.trim: it also drops the BOM and
// the Unicode spaces.
func jsTrim(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		switch r {
		case '\t', '\n', '\v', '\f', '\r', ' ', 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff:
			return true
		}
		return 0x2000 <= r && r <= 0x200a
	})
}

// iniUnquote is the ini package's unsafe(): a quoted value is read as JSON
// (single quotes dropped first) and kept as written when that fails; else
// it ends at the first unescaped ';' or '#', and '\;', '\#', '\\' are
// unescaped. str is false when the JSON is not a string.
func iniUnquote(s string) (value string, str bool) {
	s = jsTrim(s)
	if len(s) > 0 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		inner := s
		if s[0] == '\'' {
			inner = ""
			if len(s) >= 2 {
				inner = s[1 : len(s)-1]
			}
		}
		dec := json.NewDecoder(strings.NewReader(inner))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) == nil && !dec.More() {
			if _, err := dec.Token(); err == io.EOF {
				str, ok := v.(string)
				return str, ok
			}
		}
		return inner, true
	}
	var b strings.Builder
	escaped := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			if c != '\\' && c != ';' && c != '#' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
			escaped = false
		case c == ';' || c == '#':
			return jsTrim(b.String()), true
		case c == '\\':
			escaped = true
		default:
			b.WriteByte(c)
		}
	}
	if escaped {
		b.WriteByte('\\')
	}
	return jsTrim(b.String()), true
}

// envReplace is npm's ${NAME} expansion: ${NAME} becomes the variable's
// value (left as written when it is not set), ${NAME?} becomes the value or
// nothing; an odd number of backslashes before the $ escapes it (half of
// them are kept), an even number is halved.
func envReplace(s string, env func(string) (string, bool)) string {
	var b strings.Builder
	i := 0
	for i < len(s) {
		j := strings.Index(s[i:], "${")
		if j < 0 {
			break
		}
		j += i
		end := strings.IndexByte(s[j+2:], '}')
		if end < 0 {
			break
		}
		end += j + 2
		name := s[j+2 : end]
		optional := strings.HasSuffix(name, "?")
		if optional {
			name = name[:len(name)-1]
		}
		if name == "" || strings.ContainsAny(name, "${}?") {
			// not an expression: keep the text up to and including this "${"
			// and look again after it
			b.WriteString(s[i : j+2])
			i = j + 2
			continue
		}
		// the backslashes right before the $, not counting ones already
		// written out
		esc := 0
		for k := j - 1; k >= i && s[k] == '\\'; k-- {
			esc++
		}
		b.WriteString(s[i : j-esc])
		if esc%2 == 1 {
			b.WriteString(strings.Repeat(`\`, (esc-1)/2))
			b.WriteString(s[j : end+1])
		} else {
			b.WriteString(strings.Repeat(`\`, esc/2))
			if v, ok := env(name); ok {
				b.WriteString(v)
			} else if !optional {
				b.WriteString("${" + name + "}")
			}
		}
		i = end + 1
	}
	b.WriteString(s[i:])
	return b.String()
}

// Settings is where install and publish send requests and with what
// token, from the flags, REGEDGE_TOKEN and the .npmrc files.
type Settings struct {
	Registry       *url.URL
	RegistryFrom   string              // "--registry", an .npmrc path, or "default"
	Scopes         map[string]*url.URL // "@scope" -> registry, from the .npmrc files (none with --registry)
	Token          string              // --token, else REGEDGE_TOKEN: for the default registry
	TokenFrom      string              // "--token", "REGEDGE_TOKEN" or ""
	AuthTokens     map[string]string   // .npmrc "//host[:port]/path/" -> token
	AuthTokensFrom map[string]string   // the file each token came from
	Files          []string            // the .npmrc files read, project first
}

// SettingsInput is what LoadSettings reads.
type SettingsInput struct {
	Dir             string // the project (or package) directory: DIR/.npmrc
	Registry, Token string // the flags ("" when not given)
	DefaultRegistry string // when neither a flag nor an .npmrc names one
	Getenv          func(string) (string, bool)
}

// ErrNpmrc is an .npmrc that cannot be read or names an unusable registry.
var ErrNpmrc = errors.New(".npmrc")

// LoadSettings works out the registry, scoped registries and tokens as npm
// would from DIR/.npmrc (the project's) and the user's .npmrc
// ($npm_config_userconfig, else $HOME/.npmrc), the project's winning; then
// --registry beats every registry of the files (scoped ones too: an
// explicit edge is where everything goes), and --token, else
// $REGEDGE_TOKEN, beats the files' token for the default registry.
func LoadSettings(in SettingsInput) (*Settings, error) {
	getenv := in.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	s := &Settings{Scopes: map[string]*url.URL{}, AuthTokens: map[string]string{}, AuthTokensFrom: map[string]string{}}
	var files []string
	userFile := ""
	home, _ := getenv("HOME")
	for _, k := range []string{"npm_config_userconfig", "NPM_CONFIG_USERCONFIG"} {
		if v, ok := getenv(k); ok && v != "" {
			userFile = v
			break
		}
	}
	if userFile == "" && home != "" {
		userFile = filepath.Join(home, ".npmrc")
	}
	if strings.HasPrefix(userFile, "~/") && home != "" {
		userFile = filepath.Join(home, userFile[2:])
	}
	if userFile != "" {
		if abs, err := filepath.Abs(userFile); err == nil {
			userFile = abs
		}
	}
	if in.Dir != "" {
		project, err := filepath.Abs(filepath.Join(in.Dir, ".npmrc"))
		if err != nil {
			return nil, err
		}
		// npm does not read the same file twice when the project is $HOME
		if project != userFile {
			files = append(files, project)
		}
	}
	if userFile != "" {
		files = append(files, userFile)
	}
	// the user's file first, so that the project's overwrites it
	registryFrom := map[string]string{}
	values := map[string]string{}
	for i := len(files) - 1; i >= 0; i-- {
		data, err := os.ReadFile(files[i])
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNpmrc, err)
		}
		if !utf8.Valid(data) {
			return nil, fmt.Errorf("%w: %s is not UTF-8", ErrNpmrc, files[i])
		}
		s.Files = append([]string{files[i]}, s.Files...)
		for k, v := range ParseNpmrc(string(data), getenv) {
			values[k] = v
			registryFrom[k] = files[i]
		}
	}
	for k, v := range values {
		switch {
		case k == "registry":
		case strings.HasPrefix(k, "@") && strings.HasSuffix(k, ":registry"):
			scope := strings.TrimSuffix(k, ":registry")
			if CheckName(scope+"/x") != "" {
				continue
			}
			u, err := registryURL(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %s: %v", ErrNpmrc, registryFrom[k], k, err)
			}
			s.Scopes[scope] = u
		case strings.HasPrefix(k, "//") && strings.HasSuffix(k, ":_authToken"):
			s.AuthTokens[strings.TrimSuffix(k, ":_authToken")] = v
			s.AuthTokensFrom[strings.TrimSuffix(k, ":_authToken")] = registryFrom[k]
		}
	}
	reg, from := in.DefaultRegistry, "default"
	if v, ok := values["registry"]; ok && v != "" {
		reg, from = v, registryFrom["registry"]
	}
	if in.Registry != "" {
		reg, from = in.Registry, "--registry"
		s.Scopes = map[string]*url.URL{}
	}
	u, err := registryURL(reg)
	if err != nil {
		if from == "--registry" || from == "default" {
			return nil, fmt.Errorf("--registry %q: %v", reg, err)
		}
		return nil, fmt.Errorf("%w: %s: registry: %v", ErrNpmrc, from, err)
	}
	s.Registry, s.RegistryFrom = u, from
	switch tok, ok := getenv("REGEDGE_TOKEN"); {
	case in.Token != "":
		s.Token, s.TokenFrom = in.Token, "--token"
	case ok && tok != "":
		s.Token, s.TokenFrom = tok, "REGEDGE_TOKEN"
	}
	return s, nil
}

// registryURL parses a registry URL: http or https, with a host; the path
// is made a directory, as npm does.
func registryURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("want an http(s) URL")
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	return u, nil
}

// Client makes the client of these settings.
func (s *Settings) Client() *Client {
	return &Client{Registry: s.Registry, Scopes: s.Scopes, Token: s.Token, AuthTokens: s.AuthTokens}
}
