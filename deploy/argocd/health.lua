-- Argo CD health check for ecs.alibabacloud.com/CopyImageCancellation (Lua 5.1).
-- It reads the resource the way kstatus (sigs.k8s.io/cli-utils) does:
--   status.observedGeneration behind metadata.generation -> Progressing
--   Reconciling=True                                      -> Progressing
--   Stalled=True (a terminal failure)                     -> Degraded, with its message
--   Ready=True (the copy was cancelled)                   -> Healthy
-- and, stricter than kstatus, a resource whose controller has not written
-- conditions yet is Progressing, never Healthy.
-- Install: argocd-cm key resource.customizations.health.ecs.alibabacloud.com_CopyImageCancellation
local hs = {}

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the copyimage-canceller controller to record a status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.status = "Progressing"
  hs.message = string.format(
    "CopyImageCancellation generation is %d, but latest observed generation is %d",
    generation, observed)
  return hs
end

-- The condition's message, or its reason when the message is empty.
local function describe(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return condition.reason or ""
end

local conditions = obj.status.conditions or {}
-- As in kstatus, the first Reconciling=True or Stalled=True in list order decides.
for _, condition in ipairs(conditions) do
  if condition.type == "Reconciling" and condition.status == "True" then
    hs.status = "Progressing"
    hs.message = describe(condition)
    return hs
  end
  if condition.type == "Stalled" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = describe(condition)
    return hs
  end
end

for _, condition in ipairs(conditions) do
  if condition.type == "Ready" then
    if condition.status == "True" then
      hs.status = "Healthy"
    else
      hs.status = "Progressing"
    end
    hs.message = describe(condition)
    return hs
  end
end

hs.status = "Progressing"
hs.message = "Waiting for the copyimage-canceller controller to report conditions"
return hs
