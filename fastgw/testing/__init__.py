"""Test helpers for fastgw: the sample upstream server (:mod:`fastgw.testing.backend`)."""
