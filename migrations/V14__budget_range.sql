-- Budgets reach Redis as integers that Lua must hold exactly (doubles: below 2^53), so the
-- largest budget is 1,000,000 USD per period (10^15 nano-USD). Larger ones become that.
UPDATE api_keys SET budget_nusd = 1000000000000000 WHERE budget_nusd > 1000000000000000;
UPDATE workspaces SET budget_nusd = 1000000000000000 WHERE budget_nusd > 1000000000000000;
ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_budget_max CHECK (budget_nusd <= 1000000000000000);
ALTER TABLE workspaces
    ADD CONSTRAINT workspaces_budget_max CHECK (budget_nusd <= 1000000000000000);
