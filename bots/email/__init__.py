"""Email approvals (issue 5): requests by SMTP with signed links, decided on a confirmation page."""
