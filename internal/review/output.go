package review

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WriteTable prints the report for people.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "function\t%s\n", r.Function)
	fmt.Fprintf(tw, "window\t%s .. %s\n", r.Start.UTC().Format(time.RFC3339), r.End.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "requests\t%d\n", r.Requests)
	fmt.Fprintf(tw, "invocations\t%d\n", r.Invocations)
	if r.Invocations > 0 {
		fmt.Fprintf(tw, "requests per invocation\t%.1f\n", float64(r.Requests)/float64(r.Invocations))
	}
	fmt.Fprintf(tw, "billed ms\t%.0f\n", r.BilledMs)
	fmt.Fprintf(tw, "billed ms, one request per invocation\t%.0f\n", r.SingleMs)
	fmt.Fprintf(tw, "billed ms idle (lingers, warm instances)\t%.0f\n", r.IdleMs)
	fmt.Fprintf(tw, "background ms (work after answers)\t%.0f\n", r.BackgroundMs)
	fmt.Fprintf(tw, "compute saved\t%.1f%%\n", r.SavedPercent)
	fmt.Fprintf(tw, "CPU ms\t%.0f (%.1f%% of billed)\n", r.CPUMs, r.CPUPercent)
	fmt.Fprintf(tw, "latency p50 / p99\t%.0f ms / %.0f ms (%s)\n", r.P50Ms, r.P99Ms, r.LatencySource)
	fmt.Fprintf(tw, "nacks\t%d\n", r.Nacks)
	fmt.Fprintf(tw, "cold starts\t%d\n", r.ColdStarts)
	fmt.Fprintf(tw, "throttles\t%d\n", r.Throttles)
	fmt.Fprintf(tw, "5xx answers\t%d\n", r.Errors5xx)
	return tw.Flush()
}

// WriteJSON prints the report for machines.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WritePNG charts compute saved and requests per period, one panel each,
// over the window.
func (r Report) WritePNG(path string) error {
	saved, reqs := make(plotter.XYs, len(r.Series)), make(plotter.XYs, len(r.Series))
	for i, p := range r.Series {
		x := p.Time.Sub(r.Start).Minutes()
		saved[i] = plotter.XY{X: x, Y: p.SavedPercent}
		reqs[i] = plotter.XY{X: x, Y: float64(p.Requests)}
	}
	top, err := panel(fmt.Sprintf("%s: compute saved (%.1f%% over the window)", r.Function, r.SavedPercent), "saved %", saved)
	if err != nil {
		return err
	}
	top.Y.Min, top.Y.Max = min(0, top.Y.Min), 100
	bottom, err := panel("requests per period", "requests", reqs)
	if err != nil {
		return err
	}
	bottom.X.Label.Text = "minutes since " + r.Start.UTC().Format("2006-01-02 15:04:05Z")
	bottom.Y.Min = 0
	for _, p := range []*plot.Plot{top, bottom} {
		p.X.Min, p.X.Max = 0, r.End.Sub(r.Start).Minutes()
	}

	img := vgimg.New(10*vg.Inch, 7*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canvases := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func panel(title, ylabel string, xys plotter.XYs) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	line, points, err := plotter.NewLinePoints(xys)
	if err != nil {
		return nil, err
	}
	p.Add(line, points)
	return p, nil
}
