"""Human-readable reports: self-contained HTML pages with embedded PNG plots."""
