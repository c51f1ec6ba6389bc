package pki

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// maxTreeFile bounds what ReadTree reads per file: certificates, keys and
// kubeconfigs are a few kilobytes.
const maxTreeFile = 1 << 20

// ReadTree reads every regular file under root (paths relative, with '/').
// A missing root is an empty tree.
func ReadTree(root string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == root {
				return fs.SkipAll
			}
			return err
		}
		if !d.Type().IsRegular() || strings.Contains(d.Name(), ".tmp") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > maxTreeFile {
			return fmt.Errorf("pki: %s is %d bytes, too large for a certificate or key", p, info.Size())
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pki: read %s: %w", root, err)
	}
	return out, nil
}

// WriteTree writes files under root. Each file that changed is written to a
// temporary file in its folder, synced and renamed into place, and the
// folder synced, so a reader never sees half a key and a crash cannot undo
// the rename; unchanged files are left alone. Modes are applied
// to every file, changed or not.
func WriteTree(root string, files map[string]File) (written []string, err error) {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f := files[p]
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return written, fmt.Errorf("pki: %w", err)
		}
		if old, err := os.ReadFile(full); err == nil && bytes.Equal(old, f.Data) {
			if err := os.Chmod(full, f.Mode); err != nil {
				return written, fmt.Errorf("pki: %w", err)
			}
			continue
		}
		if err := WriteFileAtomic(full, f.Data, f.Mode); err != nil {
			return written, err
		}
		written = append(written, p)
	}
	return written, nil
}

// WriteFileAtomic writes data to a temporary file beside path with mode,
// syncs it, renames it into place and syncs the folder, so a reader never
// sees half a file and the new one survives a crash.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	// Set the mode before any byte of a key lands in the file.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// RemoveStale deletes, under root, the files Generate marked "removed", and
// returns those it deleted; a file already gone is no error.
func RemoveStale(root string, actions []Action) (removed []string, err error) {
	dirs := map[string]bool{}
	for _, a := range actions {
		if a.Verb != Removed {
			continue
		}
		full := filepath.Join(root, filepath.FromSlash(a.Path))
		if err := os.Remove(full); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return removed, fmt.Errorf("pki: remove stale %s: %w", a.Path, err)
		}
		removed = append(removed, a.Path)
		dirs[filepath.Dir(full)] = true
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// syncDir flushes a folder's entries (a rename or removal in it) to disk:
// without it, a crash right after the rename can bring the old file back.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("pki: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pki: sync %s: %w", dir, err)
	}
	return nil
}

// WriteWithBackup replaces the file at p with data, keeping what was there
// as p+".bak": the backup is written first (atomically, same mode), then
// the file itself, so at every moment p holds either the old or the new
// contents, whole, and after a crash the old ones are still in the backup.
// A p that does not exist yet is simply written.
func WriteWithBackup(p string, data []byte, mode fs.FileMode) error {
	old, err := os.ReadFile(p)
	switch {
	case err == nil:
		if err := WriteFileAtomic(p+".bak", old, mode); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("pki: back up %s: %w", p, err)
	}
	return WriteFileAtomic(p, data, mode)
}
