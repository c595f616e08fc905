-- Argo CD health check for batcomputer.io/BatModel (kstatus conventions).
--   Healthy:     Ready=True and the status describes the current spec
--                (status.observedGeneration == metadata.generation).
--   Degraded:    Stalled=True for the current spec: the new version cannot start;
--                the previous version keeps serving, the message says why.
--   Progressing: no status yet, the operator has not seen the latest spec, or a
--                rollout is under way.
-- Plain Lua 5.1 (Argo CD runs gopher-lua); `obj` is the live BatModel.
local hs = {}

local function condition(status, wanted)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Batcomputer operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    .. " (status describes generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Version " .. tostring(status.desiredVersion) .. " cannot start")
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Serving version " .. tostring(status.servingVersion))
  return hs
end

hs.status = "Progressing"
hs.message = describe(condition(status, "Reconciling"), describe(ready, "Rolling out"))
return hs
