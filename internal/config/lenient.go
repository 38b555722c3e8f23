package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
)

// LoadLenient is Load for `regedge run`: a key this build does not know is
// dropped and named in the returned list (the agent warns and exports
// regedge_config_unknown_keys) instead of stopping the start, so that an
// older agent survives a newer ConfigMap during a rollback. Everything
// else is as strict as Load: a known key with a bad value, a file that is
// not JSON, a bad environment variable, a value Validate refuses.
// `regedge config validate` uses Load.
func LoadLenient(path string, env func(string) (string, bool)) (*Config, []string, error) {
	c := Default()
	var unknown []string
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("config: %w", err)
		}
		if c, unknown, err = decodeLenient(b, path, c); err != nil {
			return nil, nil, err
		}
	}
	if env == nil {
		env = os.LookupEnv
	}
	if err := applyEnv(c, env); err != nil {
		return nil, nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	return c, unknown, nil
}

// decodeLenient is decode after removing, from the file's objects, every
// key the Config type does not have (matched as encoding/json matches
// them: the json tag, case-insensitively). Objects keep their order, so
// that a key given twice decodes as it would have. A file that is not one
// JSON value gets decode's error.
func decodeLenient(b []byte, source string, base *Config) (*Config, []string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // numbers re-encode exactly as written
	doc, err := readValue(dec)
	if err == nil && dec.More() { // as decode judges what follows the value
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		_, err := decode(bytes.NewReader(b), source, base)
		if err == nil { // cannot happen: decode is stricter than this parse
			err = &Error{Source: source, Key: "(file)", Err: errors.New("not one JSON value")}
		}
		return nil, nil, err
	}
	var unknown []string
	doc = strip(doc, reflect.TypeOf(Config{}), "", &unknown)
	c, err := decode(bytes.NewReader(appendValue(nil, doc)), source, base)
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(unknown)
	return c, unknown, nil
}

// object is a JSON object with its members in the file's order.
type object []member

type member struct {
	key string
	val any // object, []any, json.Number, string, bool or nil
}

// readValue reads one JSON value, objects as object.
func readValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		var obj object
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			obj = append(obj, member{k.(string), v})
		}
		_, err := dec.Token() // '}'
		return obj, err
	case json.Delim('['):
		arr := []any{}
		for dec.More() {
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err := dec.Token() // ']'
		return arr, err
	}
	return tok, nil
}

// appendValue writes v back as JSON.
func appendValue(dst []byte, v any) []byte {
	switch v := v.(type) {
	case object:
		dst = append(dst, '{')
		for i, m := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			k, _ := json.Marshal(m.key)
			dst = append(append(dst, k...), ':')
			dst = appendValue(dst, m.val)
		}
		return append(dst, '}')
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendValue(dst, e)
		}
		return append(dst, ']')
	case json.Number:
		return append(dst, v...)
	}
	b, _ := json.Marshal(v) // string, bool, nil
	return append(dst, b...)
}

var unmarshalerType = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

// strip returns v (a value readValue read) without the object keys t has
// no field for, recording their paths.
func strip(v any, t reflect.Type, path string, unknown *[]string) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return v // decodes itself (Hash)
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(object)
		if !ok {
			return v // a type error: decode says so
		}
		kept := object{}
		for _, m := range obj {
			f, found := fieldFor(t, m.key)
			if !found {
				*unknown = append(*unknown, join(path, m.key))
				continue
			}
			kept = append(kept, member{m.key, strip(m.val, f.Type, join(path, m.key), unknown)})
		}
		return kept
	case reflect.Map:
		if obj, ok := v.(object); ok {
			for i := range obj {
				obj[i].val = strip(obj[i].val, t.Elem(), join(path, obj[i].key), unknown)
			}
		}
	case reflect.Slice, reflect.Array:
		if arr, ok := v.([]any); ok {
			for i := range arr {
				arr[i] = strip(arr[i], t.Elem(), fmt.Sprintf("%s[%d]", path, i), unknown)
			}
		}
	}
	return v
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldFor finds the field a JSON key decodes into: its json name, else,
// as encoding/json does, one that matches case-insensitively.
func fieldFor(t reflect.Type, key string) (reflect.StructField, bool) {
	var fold reflect.StructField
	folded := false
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f, true
		}
		if !folded && strings.EqualFold(name, key) {
			fold, folded = f, true
		}
	}
	return fold, folded
}
