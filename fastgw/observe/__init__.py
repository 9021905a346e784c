"""What fastgw shows of itself: error and access logs (metrics and stub_status come later)."""
