-- Runs once, on the first start of an empty volume: POSTGRES_DB (mlflow) already exists;
-- the capture store and the monitoring tables live in their own database.
CREATE DATABASE bikes;
