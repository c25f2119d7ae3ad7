package redisstore

import (
	"context"
	"testing"
	"time"
)

func TestUsageAcrossDaysAndMonths(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	jun30 := time.Date(2026, 6, 30, 23, 0, 0, 0, time.UTC)
	jul1 := time.Date(2026, 7, 1, 0, 30, 0, 0, time.UTC)
	apply(t, s, reg("d1", "a", jun30.Add(-48*time.Hour)), reg("d2", "a", jun30.Add(-48*time.Hour)), reg("d3", "a", jun30.Add(-48*time.Hour)),
		ended("d1", "s1", "success", 600, jun30),                                       // June
		ended("d2", "s2", "success", 90, jul1),                                         // July
		ended("d1", "s3", "failed", 30, time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)), // June, mid-month
	)
	june := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	july := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	aug := time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		from, to     time.Time
		secs, active int64
	}{
		"june":             {june, july, 630, 1},
		"july":             {july, aug, 90, 1},
		"both":             {june, aug, 720, 2},
		"partial days":     {jun30.Add(-time.Minute), jul1.Add(time.Minute), 690, 2},
		"within one day":   {jun30.Add(time.Second), jul1, 0, 0},
		"end is exclusive": {june, jun30, 30, 1},
		"start inclusive":  {jun30, jun30.Add(time.Second), 600, 1},
	} {
		t.Run(name, func(t *testing.T) {
			u, err := s.Usage(ctx, "a", tc.from, tc.to)
			if err != nil {
				t.Fatal(err)
			}
			if u.SessionSeconds != tc.secs || u.ActiveDevices != tc.active || u.Devices != 3 {
				t.Fatalf("usage = %+v, want %d s, %d active, 3 devices", u, tc.secs, tc.active)
			}
		})
	}
	// A live session makes its device active in a period that contains now.
	s.SetClock(func() time.Time { return jul1.Add(time.Hour) })
	apply(t, s, started("d3", "live1", jul1.Add(30*time.Minute)))
	if u, _ := s.Usage(ctx, "a", july, aug); u.ActiveDevices != 2 {
		t.Fatalf("active with a live session = %d, want 2", u.ActiveDevices)
	}
	if u, _ := s.Usage(ctx, "a", june, july); u.ActiveDevices != 1 {
		t.Fatalf("a live session must not count in a past period: %d", u.ActiveDevices)
	}
}
