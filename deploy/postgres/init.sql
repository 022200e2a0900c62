-- Idempotent: application role and database (run by deploy/stack.sh as the postgres superuser).
SELECT 'CREATE ROLE leaderboard LOGIN CREATEDB PASSWORD ''leaderboard'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'leaderboard')\gexec
SELECT 'CREATE DATABASE leaderboard OWNER leaderboard'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'leaderboard')\gexec
