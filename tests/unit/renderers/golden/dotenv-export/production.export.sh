# Shell environment (source it: set -a; . ./FILE; set +a) for myapp (production), rendered by Strongroom; do not edit.
export DATABASE_URL='postgres://myapp:s3cr$t#pa55@db.internal:5432/myapp_production'
export FRONTEND_URL='https://app.example.com'
export KAMAL_REGISTRY_PASSWORD='dckr_pat_Zx9$Qw#7'\''lk'
export RAILS_ENV='production'
export RAILS_MASTER_KEY='0123456789abcdef0123456789abcdef'
export SECRET_KEY_BASE='6f1c3b0e9a2d4c8b7e5f0a1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f36f1c3b0e9a2d4c8b7e5f0a1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f3'
export SSL_PRIVATE_KEY='-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj
MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu
NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ
-----END PRIVATE KEY-----
'
