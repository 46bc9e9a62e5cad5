// Command esgzharness drives the Go reference eStargz library (stargz-snapshotter
// v0.12, as packaged by Debian) so that the Python test suite can check
// interoperability in both directions.
//
// Usage:
//
//	esgzharness read BLOB TOCDIGEST
//	esgzharness build IN.tar OUT [-chunk-size N] [-level L] [-prioritized FILE] [-allow-missing] [-zstdchunked]
//	esgzharness gzip9 IN OUT
//
// Read opens eStargz and zstd:chunked blobs alike (the library tries the zstd:chunked
// footer too). Build with -zstdchunked writes zstd:chunked through the library's
// zstdchunked compressor; -level is then a zstd level, mapped as ctr-remote maps it.
//
// Build splits the layer into at least GOMAXPROCS parts that are compressed
// independently, so its output bytes (and TOC digest) depend on GOMAXPROCS: set
// GOMAXPROCS=1 in the environment for blobs that are reproducible across machines.
//
// Every command prints exactly one JSON object on stdout. On any error it prints
// a message on stderr and exits with status 1 (status 2 for usage errors).
package main

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

const usage = `usage:
  esgzharness read BLOB TOCDIGEST
  esgzharness build IN.tar OUT [-chunk-size N] [-level L] [-prioritized FILE] [-allow-missing] [-zstdchunked]
  esgzharness gzip9 IN OUT
`

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var (
		out interface{}
		err error
	)
	switch os.Args[1] {
	case "read":
		out, err = cmdRead(os.Args[2:])
	case "build":
		out, err = cmdBuild(os.Args[2:])
	case "gzip9":
		out, err = cmdGzip9(os.Args[2:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stdout, usage)
		return
	default:
		err = usageError{fmt.Sprintf("unknown command %q", os.Args[1])}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "esgzharness %s: %v\n", os.Args[1], err)
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "esgzharness: writing JSON: %v\n", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------------
// read

type entryJSON struct {
	Type     string            `json:"type"`
	Mode     int64             `json:"mode"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	LinkName string            `json:"linkName"`
	Size     int64             `json:"size"`
	DevMajor int               `json:"devMajor"`
	DevMinor int               `json:"devMinor"`
	Xattrs   map[string]string `json:"xattrs"`
	ModTime  string            `json:"modtime"`
}

type readJSON struct {
	TOCDigest string               `json:"toc_digest"`
	Files     map[string]string    `json:"files"`
	Entries   map[string]entryJSON `json:"entries"`
}

func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func toEntryJSON(e *estargz.TOCEntry) entryJSON {
	x := make(map[string]string, len(e.Xattrs))
	for k, v := range e.Xattrs {
		x[k] = base64.StdEncoding.EncodeToString(v)
	}
	return entryJSON{
		Type:     e.Type,
		Mode:     e.Mode,
		UID:      e.UID,
		GID:      e.GID,
		LinkName: e.LinkName,
		Size:     e.Size,
		DevMajor: e.DevMajor,
		DevMinor: e.DevMinor,
		Xattrs:   x,
		ModTime:  e.ModTime3339,
	}
}

// rawTOC decodes the TOC a second time through the library's public footer and
// decompressor API. The Reader resolves hardlinks to their targets everywhere
// (Lookup, the child tree), so this is the only way to report hardlink entries
// as what they are.
func rawTOC(sr *io.SectionReader) (*estargz.JTOC, digest.Digest, error) {
	zd := new(zstdchunked.Decompressor)
	if sr.Size() >= zd.FooterSize() {
		tail := make([]byte, zd.FooterSize())
		if _, err := sr.ReadAt(tail, sr.Size()-zd.FooterSize()); err != nil {
			return nil, "", fmt.Errorf("footer: %w", err)
		}
		if _, tocOff, tocLen, err := zd.ParseFooter(tail); err == nil {
			toc, dgst, err := zd.ParseTOC(io.NewSectionReader(sr, tocOff, tocLen))
			if err != nil {
				return nil, "", fmt.Errorf("parsing zstd:chunked TOC: %w", err)
			}
			return toc, dgst, nil
		}
	}
	tocOff, footerSize, err := estargz.OpenFooter(sr)
	if err != nil {
		return nil, "", fmt.Errorf("footer: %w", err)
	}
	tocLen := sr.Size() - tocOff - footerSize
	if tocOff < 0 || tocLen <= 0 {
		return nil, "", fmt.Errorf("footer: bad TOC offset %d (blob size %d)", tocOff, sr.Size())
	}
	toc, dgst, err := new(estargz.GzipDecompressor).ParseTOC(io.NewSectionReader(sr, tocOff, tocLen))
	if err != nil {
		return nil, "", fmt.Errorf("parsing TOC: %w", err)
	}
	return toc, dgst, nil
}

func sha256Of(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", n, err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}

// verifyChunks walks the chunks of a regular file with ChunkEntryForOffset and
// checks each chunk's uncompressed bytes against the verifier from VerifyTOC.
func verifyChunks(r *estargz.Reader, v estargz.TOCEntryVerifier, name string, size int64, fr *io.SectionReader) error {
	var off int64
	for off < size {
		ce, ok := r.ChunkEntryForOffset(name, off)
		if !ok {
			return fmt.Errorf("%q: no chunk for offset %d (size %d)", name, off, size)
		}
		if ce.ChunkOffset != off {
			return fmt.Errorf("%q: chunk for offset %d starts at %d", name, off, ce.ChunkOffset)
		}
		if ce.ChunkSize <= 0 || ce.ChunkOffset+ce.ChunkSize > size {
			return fmt.Errorf("%q: bad chunk at %d: chunkSize %d, file size %d", name, off, ce.ChunkSize, size)
		}
		dv, err := v.Verifier(ce)
		if err != nil {
			return fmt.Errorf("%q: chunk at %d: %w", name, off, err)
		}
		n, err := io.Copy(dv, io.NewSectionReader(fr, ce.ChunkOffset, ce.ChunkSize))
		if err != nil {
			return fmt.Errorf("%q: reading chunk at %d: %w", name, off, err)
		}
		if n != ce.ChunkSize {
			return fmt.Errorf("%q: chunk at %d: read %d bytes, want %d", name, off, n, ce.ChunkSize)
		}
		if !dv.Verified() {
			return fmt.Errorf("%q: chunk at %d (size %d) does not match its chunkDigest", name, off, ce.ChunkSize)
		}
		off += ce.ChunkSize
	}
	return nil
}

func cmdRead(args []string) (interface{}, error) {
	if len(args) != 2 {
		return nil, usageError{"read needs BLOB and TOCDIGEST"}
	}
	want, err := digest.Parse(args[1])
	if err != nil {
		return nil, fmt.Errorf("bad TOC digest %q: %w", args[1], err)
	}
	f, err := os.Open(args[0])
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	sr := io.NewSectionReader(f, 0, st.Size())

	r, err := estargz.Open(sr, estargz.WithDecompressors(new(zstdchunked.Decompressor)))
	if err != nil {
		return nil, fmt.Errorf("estargz.Open: %w", err)
	}
	v, err := r.VerifyTOC(want)
	if err != nil {
		return nil, fmt.Errorf("VerifyTOC: %w", err)
	}

	toc, rawDigest, err := rawTOC(sr)
	if err != nil {
		return nil, err
	}
	if rawDigest != r.TOCDigest() {
		return nil, fmt.Errorf("TOC decoded twice gives two digests: %s vs %s", rawDigest, r.TOCDigest())
	}
	// Last entry wins for duplicated names, like the Reader's own index.
	raw := make(map[string]*estargz.TOCEntry)
	for _, e := range toc.Entries {
		if e.Type != "chunk" {
			raw[cleanName(e.Name)] = e
		}
	}

	root, ok := r.Lookup("")
	if !ok {
		return nil, errors.New("no root directory")
	}
	out := readJSON{
		TOCDigest: r.TOCDigest().String(),
		Files:     map[string]string{},
		Entries:   map[string]entryJSON{},
	}
	if e, ok := raw[""]; ok {
		out.Entries[""] = toEntryJSON(e)
	}

	var hardlinks []string
	var walk func(dir string, de *estargz.TOCEntry) error
	walk = func(dir string, de *estargz.TOCEntry) error {
		var names []string
		de.ForeachChild(func(base string, _ *estargz.TOCEntry) bool {
			names = append(names, base)
			return true
		})
		sort.Strings(names)
		for _, base := range names {
			ent, _ := de.LookupChild(base)
			p := path.Join(dir, base)
			if re, ok := raw[p]; ok && re.Type == "hardlink" {
				// The tree holds the link's target here; report the link itself and
				// do not descend (a link to a directory would loop).
				out.Entries[p] = toEntryJSON(re)
				hardlinks = append(hardlinks, p)
				continue
			}
			if ent.Name != p {
				return fmt.Errorf("tree node %q holds entry named %q", p, ent.Name)
			}
			out.Entries[p] = toEntryJSON(ent)
			if ent.Type == "reg" {
				fr, err := r.OpenFile(p)
				if err != nil {
					return fmt.Errorf("OpenFile(%q): %w", p, err)
				}
				// Chunk digests first: they are what a lazy reader relies on.
				if err := verifyChunks(r, v, p, ent.Size, fr); err != nil {
					return err
				}
				sum, n, err := sha256Of(fr)
				if err != nil {
					return fmt.Errorf("reading %q: %w", p, err)
				}
				if n != ent.Size {
					return fmt.Errorf("%q: read %d bytes, TOC size is %d", p, n, ent.Size)
				}
				if ent.Digest != "" && ent.Digest != sum {
					return fmt.Errorf("%q: content is %s, TOC digest says %s", p, sum, ent.Digest)
				}
				out.Files[p] = sum
			}
			if err := walk(p, ent); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk("", root); err != nil {
		return nil, err
	}

	// Every named TOC entry must be reachable from the root.
	for name := range raw {
		if _, ok := out.Entries[name]; !ok {
			return nil, fmt.Errorf("TOC entry %q is not reachable from the root", name)
		}
	}
	// A hardlink must open through OpenFile as its target does.
	for _, p := range hardlinks {
		target, ok := r.Lookup(p)
		if !ok {
			return nil, fmt.Errorf("hardlink %q: target %q not found", p, raw[p].LinkName)
		}
		if target.Type != "reg" {
			continue
		}
		fr, err := r.OpenFile(p)
		if err != nil {
			return nil, fmt.Errorf("OpenFile(%q) (hardlink): %w", p, err)
		}
		sum, _, err := sha256Of(fr)
		if err != nil {
			return nil, fmt.Errorf("reading hardlink %q: %w", p, err)
		}
		if want, ok := out.Files[target.Name]; !ok || want != sum {
			return nil, fmt.Errorf("hardlink %q reads %s, its target %q reads %s", p, sum, target.Name, want)
		}
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// build

type buildJSON struct {
	TOCDigest   string            `json:"toc_digest"`
	DiffID      string            `json:"diff_id"`
	Size        int64             `json:"size"`
	Seconds     float64           `json:"seconds"`
	Missed      []string          `json:"missed"`
	Annotations map[string]string `json:"annotations"`
}

// zstdCompression pairs the library's zstdchunked compressor and decompressor,
// as ctr-remote's converter does.
type zstdCompression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

// splitArgs lets flags come before, between or after the positional arguments.
func splitArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func readLines(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}

func cmdBuild(args []string) (interface{}, error) {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	chunkSize := fs.Int("chunk-size", 0, "chunk size in bytes (0: library default, 4 MiB)")
	level := fs.Int("level", gzip.BestCompression, "gzip compression level")
	prioritized := fs.String("prioritized", "", "file with one prioritized path per line")
	allowMissing := fs.Bool("allow-missing", false, "tolerate prioritized paths absent from the tar")
	zstdChunked := fs.Bool("zstdchunked", false, "write zstd:chunked; -level is a zstd level")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != 2 {
		return nil, usageError{"build needs IN.tar and OUT"}
	}
	in, outPath := pos[0], pos[1]

	opts := []estargz.Option{
		estargz.WithChunkSize(*chunkSize),
		estargz.WithCompressionLevel(*level),
	}
	if *prioritized != "" {
		files, err := readLines(*prioritized)
		if err != nil {
			return nil, fmt.Errorf("reading prioritized list: %w", err)
		}
		opts = append(opts, estargz.WithPrioritizedFiles(files))
	}
	annotations := map[string]string{}
	if *zstdChunked {
		opts = append(opts, estargz.WithCompression(&zstdCompression{
			&zstdchunked.Compressor{
				CompressionLevel: zstd.EncoderLevelFromZstd(*level),
				Metadata:         annotations,
			},
			new(zstdchunked.Decompressor),
		}))
	}
	missed := []string{}
	if *allowMissing {
		opts = append(opts, estargz.WithAllowPrioritizeNotFound(&missed))
	}

	f, err := os.Open(in)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}

	start := time.Now()
	blob, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()), opts...)
	if err != nil {
		return nil, fmt.Errorf("estargz.Build: %w", err)
	}
	o, err := os.Create(outPath)
	if err != nil {
		blob.Close()
		return nil, err
	}
	n, err := io.Copy(o, blob)
	if err != nil {
		o.Close()
		blob.Close()
		return nil, fmt.Errorf("writing %s: %w", outPath, err)
	}
	if err := o.Close(); err != nil {
		blob.Close()
		return nil, err
	}
	if err := blob.Close(); err != nil {
		return nil, fmt.Errorf("closing blob: %w", err)
	}
	elapsed := time.Since(start).Seconds()

	return buildJSON{
		TOCDigest:   blob.TOCDigest().String(),
		DiffID:      blob.DiffID().String(),
		Size:        n,
		Seconds:     elapsed,
		Missed:      missed,
		Annotations: annotations,
	}, nil
}

// ---------------------------------------------------------------------------
// gzip9

type gzipJSON struct {
	Seconds float64 `json:"seconds"`
	Size    int64   `json:"size"`
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func cmdGzip9(args []string) (interface{}, error) {
	if len(args) != 2 {
		return nil, usageError{"gzip9 needs IN and OUT"}
	}
	in, err := os.Open(args[0])
	if err != nil {
		return nil, err
	}
	defer in.Close()
	o, err := os.Create(args[1])
	if err != nil {
		return nil, err
	}
	start := time.Now()
	bw := bufio.NewWriterSize(o, 1<<20)
	cw := &countingWriter{w: bw}
	zw, err := gzip.NewWriterLevel(cw, gzip.BestCompression)
	if err != nil {
		o.Close()
		return nil, err
	}
	if _, err := io.Copy(zw, bufio.NewReaderSize(in, 1<<20)); err != nil {
		o.Close()
		return nil, err
	}
	if err := zw.Close(); err != nil {
		o.Close()
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		o.Close()
		return nil, err
	}
	if err := o.Close(); err != nil {
		return nil, err
	}
	return gzipJSON{Seconds: time.Since(start).Seconds(), Size: cw.n}, nil
}
