#!/usr/bin/env python3
"""Verify an Infraveil audit export (JSON lines) from PRODUCT.md's format alone:
hash = SHA-256(prev bytes || payload UTF-8), sig = Ed25519 over the hash bytes,
prev of the first record = 64 zeros. Usage: verify.py EXPORT.jsonl PUBLIC_KEY_HEX"""
import hashlib, json, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

def verify(path, public_hex):
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
    prev, n = "0" * 64, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            seq = r["seq"]
            if r["prev"] != prev:
                sys.exit(f"record {seq}: prev is not the previous record's hash")
            digest = hashlib.sha256(bytes.fromhex(r["prev"]) + r["payload"].encode("utf-8"))
            if digest.hexdigest() != r["hash"]:
                sys.exit(f"record {seq}: hash does not match")
            try:
                key.verify(bytes.fromhex(r["sig"]), digest.digest())
            except InvalidSignature:
                sys.exit(f"record {seq}: bad signature")
            if json.loads(r["payload"])["seq"] != seq:
                sys.exit(f"record {seq}: payload seq differs")
            prev, n = r["hash"], n + 1
    print(f"ok {n} {prev}")

if __name__ == "__main__":
    verify(sys.argv[1], sys.argv[2])
