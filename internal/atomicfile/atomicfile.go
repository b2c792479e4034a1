// Package atomicfile replaces files in one rename, so that a reader never
// sees half a file and a crash leaves the old one or the new one.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, with permissions mode: it writes a
// temporary file in the same directory, syncs it and renames it over
// path. The directory must exist.
func Write(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, nothing is there
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
