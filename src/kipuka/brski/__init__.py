"""BRSKI (RFC 8995): kipuka as the domain registrar in front of its own EST service.

A pledge (a device with only its factory IDevID) asks the registrar for a
voucher; the registrar decides whether this deployment owns the device, asks the
device's MASA for a voucher, and hands it back unchanged. The pledge then
enrolls over the ordinary EST endpoints with its IDevID as client certificate.

Modules, one job each:
  voucher    the voucher and voucher-request JSON (RFC 8366, RFC 8995 §3)
  signing    CMS signing and verification of vouchers (on kipuka.keydelivery.signed)
  idevid     what an IDevID says: serial number, MASA URL, issuer key id
  settings   the [brski] configuration section
  masa       the HTTPS client to a MASA (mTLS with the registrar certificate)
  registrar  the policy: ownership, holding for an officer, the voucher exchange (no HTTP)
  enrollment RFC 8995 §5.9: which label an owned IDevID enrolls on, and the LDevID link
  telemetry  voucher_status and enrollstatus reports (§5.7, §5.9.4)
  routes     the /.well-known/brski/ HTTP endpoints (no SQL)
The store side is kipuka.store.brski; the admin side is kipuka.admin.brski.
"""
