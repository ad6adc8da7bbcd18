"""Regulatory reports: large transactions per customer per business day (CTR-style) and the
periodic compliance report (CSV and PDF). They read the platform's own records of money in
and out; nothing here writes."""
