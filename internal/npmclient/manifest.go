package npmclient

import (
	"encoding/json"
	"runtime"
)

// bundled is bundleDependencies: a list of names, or true for all of the
// dependencies.
type bundled struct {
	all   bool
	names []string
}

func (b *bundled) UnmarshalJSON(data []byte) error {
	var flag bool
	if err := json.Unmarshal(data, &flag); err == nil {
		b.all = flag
		return nil
	}
	return json.Unmarshal(data, &b.names)
}

// stringList is a manifest field that may be one string or a list (os, cpu).
type stringList []string

func (s *stringList) UnmarshalJSON(data []byte) error {
	var one string
	if err := json.Unmarshal(data, &one); err == nil {
		*s = stringList{one}
		return nil
	}
	return json.Unmarshal(data, (*[]string)(s))
}

// bundledNames is the set of a version's dependencies that come inside
// its tarball (bundleDependencies, or its older spelling).
func (v *Version) bundledNames() (all bool, names []string) {
	all = v.BundleDependencies.all || v.BundledDependencies.all
	names = append(append([]string(nil), v.BundleDependencies.names...), v.BundledDependencies.names...)
	return all, names
}

// nodePlatform and nodeArch are this machine as npm names it in the os and
// cpu fields of a manifest.
var nodePlatform, nodeArch = func() (string, string) {
	platform := map[string]string{"windows": "win32"}[runtime.GOOS]
	if platform == "" {
		platform = runtime.GOOS
	}
	arch := map[string]string{"amd64": "x64", "386": "ia32", "ppc64le": "ppc64", "mipsle": "mipsel"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return platform, arch
}()

// platformAllows is npm's check of an os or cpu list: "any", a list of
// values, or "!value" exclusions.
func platformAllows(value string, list []string) bool {
	if len(list) == 0 || (len(list) == 1 && list[0] == "any") {
		return true
	}
	negated, match := 0, false
	for _, entry := range list {
		if rest, ok := cutBang(entry); ok {
			negated++
			if rest == value {
				return false
			}
		} else if entry == value {
			match = true
		}
	}
	return match || negated == len(list)
}

func cutBang(s string) (string, bool) {
	if len(s) > 0 && s[0] == '!' {
		return s[1:], true
	}
	return s, false
}
