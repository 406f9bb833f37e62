package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// table is one section's output: rows of figures, then notes.
type table struct {
	title   string
	command string // how to repeat the section alone
	header  []string
	rows    [][]string
	notes   []string
	took    time.Duration
	extra   []*table // printed after this one, in the same section
}

func (t *table) add(cells ...any) {
	row := make([]string, len(cells))
	for i, c := range cells {
		row[i] = cell(c)
	}
	t.rows = append(t.rows, row)
}

func cell(c any) string {
	switch v := c.(type) {
	case string:
		return v
	case time.Duration:
		return dur(v)
	case float64:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprint(v)
	}
}

func dur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return d.Round(100 * time.Millisecond).String()
	}
}

func (t *table) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n", t.title)
	if len(t.header) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, strings.Join(t.header, "\t")+"\t")
		for _, r := range t.rows {
			fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
		}
		tw.Flush()
	}
	for _, n := range t.notes {
		fmt.Fprintln(w, "  "+n)
	}
	for _, x := range t.extra {
		x.print(w)
	}
	if t.command != "" {
		fmt.Fprintf(w, "  (%s; section took %v)\n", t.command, t.took.Round(time.Second))
	}
}

func (t *table) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "\n## %s\n\n", t.title)
	if len(t.header) > 0 {
		b.WriteString("| " + strings.Join(t.header, " | ") + " |\n")
		b.WriteString("|" + strings.Repeat(" --- |", len(t.header)) + "\n")
		for _, r := range t.rows {
			b.WriteString("| " + strings.Join(r, " | ") + " |\n")
		}
		b.WriteString("\n")
	}
	for _, n := range t.notes {
		if strings.HasPrefix(n, "    ") {
			b.WriteString(n + "\n")
		} else {
			b.WriteString("- " + n + "\n")
		}
	}
	for _, x := range t.extra {
		x.markdown(b)
	}
	if t.command != "" {
		fmt.Fprintf(b, "\nRepeat: `%s` (took %v).\n", t.command, t.took.Round(time.Second))
	}
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func percent(x float64) string { return fmt.Sprintf("%.1f%%", x) }
