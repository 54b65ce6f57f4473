//! The end-of-run summary as people read it: one line per fact, losses by reason, bad input
//! with the reason its stage logged, each tail and quota.

use super::summary::{bad_input_by_stage, by_reason, Summary, WARMUP_S};

impl Summary {
    /// The text people read at the end of a run.
    pub fn render(&self) -> String {
        let mut s = format!(
            "app '{}' {} in {:.2} s (run dir: {})\n",
            self.app, self.outcome, self.wall_s, self.run_dir
        );
        s += &format!("  report:     {}/report.html\n", self.run_dir);
        if !self.constraints.is_empty() {
            s += &format!("  {}\n", self.constraints);
        }
        for line in &self.out_of_memory {
            s += &format!("  killed:     {line}\n");
        }
        s += &format!(
            "  items:      {} in, {} out\n",
            self.items_in, self.items_out
        );
        // Branches count their losses each: an item lost on two counts twice.
        let per_branch = self.lost_total > self.items_in.saturating_sub(self.items_out);
        s += &format!(
            "  lost:       {}{}{}\n",
            self.lost_total,
            by_reason(&self.lost),
            if per_branch && self.tails.len() > 1 {
                " counted on each branch (an item lost on two counts twice; each tail's own below)"
            } else {
                ""
            }
        );
        for line in bad_input_by_stage(&self.stages) {
            s += &format!("  bad input:  {line}\n");
        }
        if self.unfinished > 0 {
            s += &format!(
                "  unfinished: {} (in flight when the app ended: neither delivered nor counted lost)\n",
                self.unfinished
            );
        }
        s += &format!("  throughput: {:.1} items/min\n", self.throughput_per_min);
        let l = &self.latency_ms;
        if l.count == 0 && self.items_in > 0 {
            s += "  latency:    — (no item was delivered)\n";
        } else {
            s += &format!(
                "  latency:    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, jitter (std dev) {:.2} ms\n",
                l.p50, l.p99, l.max, l.jitter
            );
        }
        let st = &self.steady_latency_ms;
        if st.count > 0 && st.count < l.count {
            s += &format!(
                "  steady:     p50 {:.2} ms, p99 {:.2} ms over the {} deliveries to tails of items created {WARMUP_S} s or more after the first\n",
                st.p50, st.p99, st.count
            );
        }
        if self.tails.len() > 1 {
            for t in &self.tails {
                s += &format!(
                    "  tail '{}': {} items, {} missing{}\n",
                    t.task,
                    t.items,
                    t.missing,
                    by_reason(&t.lost)
                );
            }
        }
        for note in &self.short_sources {
            s += &format!("  short:      {note}\n");
        }
        for note in &self.behind_sources {
            s += &format!("  behind:     {note}\n");
        }
        for note in &self.reconnected_sources {
            s += &format!("  reconnected: {note}\n");
        }
        for o in &self.restarted_outputs {
            s += &format!("  restarted:  {}\n", o.note);
        }
        for o in &self.unfinished_outputs {
            s += &format!("  not written: {}\n", o.note);
        }
        for q in &self.qos {
            let achieved = if q.note.is_empty() {
                format!("{:.2}", q.achieved)
            } else {
                "—".to_string()
            };
            s += &format!(
                "  quota:      {} {achieved} ({} {}: {}{})\n",
                q.metric,
                q.bound,
                q.quota,
                if q.met { "met" } else { "MISSED" },
                if q.note.is_empty() {
                    String::new()
                } else {
                    format!(": {}", q.note)
                }
            );
        }
        s
    }
}
