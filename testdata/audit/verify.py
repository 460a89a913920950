#!/usr/bin/env python3
"""Verify an Infraveil audit export (JSON lines) from PRODUCT.md's format alone:
hash = SHA-256(prev bytes || payload UTF-8); prev of the first record = 64 zeros;
sig (on the last record of each written batch and on checkpoints) = Ed25519 over
the hash bytes. Each hash covers every record before it, so a signature vouches
for the chain up to its record; records after the last signature fail.
Usage: verify.py EXPORT.jsonl PUBLIC_KEY_HEX"""
import hashlib, json, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

def verify(path, public_hex):
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
    prev, n, sigs, unsigned_from = "0" * 64, 0, 0, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            seq = r["seq"]
            if r["prev"] != prev:
                sys.exit(f"record {seq}: prev is not the previous record's hash")
            digest = hashlib.sha256(bytes.fromhex(r["prev"]) + r["payload"].encode("utf-8"))
            if digest.hexdigest() != r["hash"]:
                sys.exit(f"record {seq}: hash does not match")
            if "sig" in r:
                try:
                    key.verify(bytes.fromhex(r["sig"]), digest.digest())
                except InvalidSignature:
                    sys.exit(f"record {seq}: bad signature")
                sigs, unsigned_from = sigs + 1, None
            elif unsigned_from is None:
                unsigned_from = seq
            if json.loads(r["payload"])["seq"] != seq:
                sys.exit(f"record {seq}: payload seq differs")
            prev, n = r["hash"], n + 1
    if unsigned_from is not None:
        sys.exit(f"record {unsigned_from}: no signature vouches for it or any record after it")
    print(f"ok {n} {prev} {sigs}")

if __name__ == "__main__":
    verify(sys.argv[1], sys.argv[2])
