package dataplane

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// s3Location is a Code or Content property. CDK names the bootstrap
// bucket with Fn::Sub over pseudo parameters.
type s3Location struct {
	S3Bucket json.RawMessage
	S3Key    string
}

// onThisMachine reports whether u names a host on this machine.
func onThisMachine(u *url.URL) bool {
	return u.Hostname() == "localhost" || net.ParseIP(u.Hostname()).IsLoopback()
}

// fetchURL unpacks the zip at a code location into dir. In AWS that is a
// presigned S3 URL; the local AWS gives one on this machine, and nothing
// is fetched from anywhere else.
func fetchURL(ctx context.Context, location, dir string) error {
	u, err := url.Parse(location)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("code location %q is not a URL", location)
	}
	if !onThisMachine(u) {
		return fmt.Errorf("code location on %s, not this machine: the local data plane fetches nothing from elsewhere", u.Hostname())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, location, nil)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: time.Minute, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if !onThisMachine(r.URL) {
			return fmt.Errorf("code location redirects to %s, not this machine", r.URL.Hostname())
		}
		return nil
	}}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u.Path, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxZip+1))
	if err != nil {
		return err
	}
	if len(b) > maxZip {
		return fmt.Errorf("code over %d MB", maxZip>>20)
	}
	return unzip(b, dir)
}

// maxZip bounds a downloaded code or layer zip (Lambda's own limit on
// unzipped code is 250 MB).
const maxZip = 250 << 20

func fetchZip(ctx context.Context, api *s3.Client, loc s3Location, pseudo *strings.Replacer, dir string) error {
	var bucket string
	var sub struct {
		Sub string `json:"Fn::Sub"`
	}
	if json.Unmarshal(loc.S3Bucket, &bucket) != nil && json.Unmarshal(loc.S3Bucket, &sub) == nil {
		bucket = pseudo.Replace(sub.Sub)
	}
	if bucket == "" || strings.Contains(bucket, "${") || loc.S3Key == "" {
		return fmt.Errorf("no S3 location in the deployed template (bucket %s, key %q)", loc.S3Bucket, loc.S3Key)
	}
	obj, err := api.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &loc.S3Key})
	if err != nil {
		return fmt.Errorf("s3://%s/%s: %w", bucket, loc.S3Key, err)
	}
	defer obj.Body.Close()
	b, err := io.ReadAll(io.LimitReader(obj.Body, maxZip+1))
	if err != nil {
		return err
	}
	if len(b) > maxZip {
		return fmt.Errorf("s3://%s/%s is over %d MB", bucket, loc.S3Key, maxZip>>20)
	}
	return unzip(b, dir)
}

func unzip(b []byte, dir string) error {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	var total int64
	for _, f := range zr.File {
		if total += int64(f.UncompressedSize64); total > maxZip {
			return fmt.Errorf("unzipped size over %d MB", maxZip>>20)
		}
		if strings.HasSuffix(f.Name, "/") {
			if err := root.MkdirAll(f.Name, 0o755); err != nil {
				return err
			}
			continue
		}
		if d := filepath.Dir(f.Name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		// os.Root refuses names that leave dir ("../x", absolute paths).
		w, err := root.OpenFile(f.Name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, f.Mode().Perm()|0o200)
		if err != nil {
			return err
		}
		r, err := f.Open()
		if err == nil {
			_, err = io.Copy(w, io.LimitReader(r, int64(f.UncompressedSize64)))
			r.Close()
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
