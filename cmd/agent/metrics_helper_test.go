package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// metric reads one series ("name{labels}") from an admin listener's
// /metrics; 0 when it is absent.
func metric(t *testing.T, c *http.Client, admin, series string) float64 {
	t.Helper()
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

func hintSeries(direction, result string) string {
	return fmt.Sprintf(`regedge_fleet_hints_total{direction=%q,result=%q}`, direction, result)
}

const markedSeries = "regedge_fleet_marked_entries_total"
