"""Where secret values live when not in the database: HashiCorp Vault KV v2 and AWS Secrets Manager.

Also the remote key-encryption keys (AWS KMS, Vault transit). This package is the only one that imports
hvac and boto3 (an import-linter contract says so); every SDK error becomes a BrokerError here.
"""
