package chat

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mtibben/confusables"
	"golang.org/x/text/secure/precis"
)

// The rule for user names lives in this file: which names are valid
// (ValidateName, validNameBytes) and which names look alike (Skeleton).
//
// A valid name is 1 to MaxNameLen code points of valid UTF-8 that is
// exactly its own form under the PRECIS UsernameCasePreserved profile of
// RFC 8265: letters and digits of any script, and the printable ASCII
// symbols other than space. The profile refuses white space, controls,
// symbols and emoji outside ASCII, compatibility forms (fullwidth letters,
// ligatures), unassigned code points, and right-to-left names that break
// the bidi rule of RFC 5893; a name that its width mapping or NFC
// normalisation would change (a decomposed "é", a fullwidth "Ａ") is
// invalid rather than changed. On top of the profile, no format character
// (Unicode category Cf) is allowed at all: the profile lets the zero-width
// joiner and non-joiner through in some contexts, but they are invisible,
// and Escape shows them as \u200d and \u200c wherever names are printed.

// isPlainNameByte reports whether c is a printable ASCII character other
// than space: a name made of these only is valid if it is not too long,
// and needs no PRECIS work (FuzzValidateName checks this shortcut against
// the profile).
func isPlainNameByte(c byte) bool { return c > ' ' && c < 0x7f }

// ValidateName reports whether name is a valid user name: 1 to MaxNameLen
// code points of valid UTF-8 that the PRECIS UsernameCasePreserved profile
// (RFC 8265) leaves as it is, with no format characters (category Cf). It
// returns nil or ErrBadUsername. Names are case sensitive: "Bob" and "bob"
// are two valid, different names.
func ValidateName(name string) error {
	if !validName(name) {
		return ErrBadUsername
	}
	return nil
}

// validNameBytes is ValidateName for a name that aliases a frame buffer.
// It allocates only for names beyond printable ASCII.
func validNameBytes(name []byte) bool {
	if len(name) == 0 || len(name) > MaxNameLen*utf8.UTFMax {
		return false
	}
	if plainName(name) {
		return len(name) <= MaxNameLen
	}
	return validName(string(name))
}

// plainName reports whether every byte of name is printable ASCII other
// than space.
func plainName[T string | []byte](name T) bool {
	for i := 0; i < len(name); i++ {
		if !isPlainNameByte(name[i]) {
			return false
		}
	}
	return true
}

func validName(name string) bool {
	if name == "" || len(name) > MaxNameLen*utf8.UTFMax {
		return false
	}
	if plainName(name) {
		return len(name) <= MaxNameLen
	}
	n := 0
	for _, r := range name {
		n++
		if r == utf8.RuneError || unicode.Is(unicode.Cf, r) {
			// RuneError: invalid UTF-8, or U+FFFD, which the profile
			// refuses too.
			return false
		}
	}
	if n > MaxNameLen {
		return false
	}
	enforced, err := precis.UsernameCasePreserved.String(name)
	return err == nil && enforced == name
}

// Skeleton returns the confusable skeleton of a user name, as Unicode
// Technical Standard #39 defines it: two names with the same skeleton look
// alike ("paypal", "pаypal" with a Cyrillic а, and "paypa1" share one). A
// login is refused while another logged-in user's name has the same
// skeleton (ErrNameLookalike). Skeletons are for comparing only: they are
// not names, and not meant to be shown. Case is kept, as in names: "Bob"
// and "bob" have different skeletons.
//
// The mapping is that of github.com/mtibben/confusables (confusables.txt
// of Unicode 13.0.0); servers that share one chat must use the same.
// Skeleton allocates nothing for a name of printable ASCII that is its
// own skeleton, and once for another name of printable ASCII.
func Skeleton(name string) string {
	if name == "" || !plainName(name) {
		return confusables.Skeleton(name)
	}
	// Printable ASCII is its own NFD, and the skeletons of its characters
	// hold no combining mark: the name's skeleton is theirs end to end.
	n, same := 0, true
	for i := 0; i < len(name); i++ {
		m := plainSkeletons[name[i]]
		n += len(m)
		same = same && len(m) == 1 && m[0] == name[i]
	}
	if same {
		return name
	}
	var b strings.Builder
	b.Grow(n)
	for i := 0; i < len(name); i++ {
		b.WriteString(plainSkeletons[name[i]])
	}
	return b.String()
}

// plainSkeletons holds the skeleton of each printable ASCII character
// (most are their own; "1", "I" and "|" are "l", "m" is "rn", ...).
var plainSkeletons = func() (t [0x7f]string) {
	for c := byte('!'); c < 0x7f; c++ {
		t[c] = confusables.Skeleton(string(rune(c)))
	}
	return t
}()
