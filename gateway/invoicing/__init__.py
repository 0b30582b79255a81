"""Invoices and statements beside the ledger (issue 11 items 5–6): Stripe invoices mirrored from
webhooks (`mirror`), the receipts and usage statements the gateway renders as PDF
(`documents`), and the reconciliation of the ledger's credits with Stripe (`reconcile`,
`stripe_lists`, `compare`)."""
