-- End-to-end test of the nib plugin in a real, headless Neovim. Driven by lsp/tests/nvim.rs:
--   nvim --headless --clean -u editors/nvim/test/e2e.lua
-- Environment: NIB_E2E_PLUGIN (the plugin's folder), NIB_E2E_CMD (the server command, JSON list),
-- NIB_E2E_ROOT (the workspace), NIB_E2E_FILE / NIB_E2E_OTHER (files to edit / open first),
-- NIB_E2E_LINE (1-based line to type at the end of), NIB_E2E_TYPE (what to type),
-- NIB_E2E_OUT (where to write a JSON report). Exits 0 when a suggestion was shown and accepted.
local env = vim.env
vim.opt.runtimepath:prepend(env.NIB_E2E_PLUGIN)
vim.opt.swapfile = false
vim.opt.shortmess:append('I')
vim.cmd('filetype plugin on')
vim.cmd('cd ' .. vim.fn.fnameescape(env.NIB_E2E_ROOT))

local report = { steps = {}, messages = {} }
local t0 = vim.uv.hrtime()
local function step(name, extra)
  local entry = { step = name, ms = (vim.uv.hrtime() - t0) / 1e6 }
  for k, v in pairs(extra or {}) do
    entry[k] = v
  end
  table.insert(report.steps, entry)
end

local edited -- the buffer under test, once opened
local function finish(ok, why)
  report.ok = ok
  report.why = why
  local b = edited or 0
  report.buffer = table.concat(vim.api.nvim_buf_get_lines(b, 0, -1, false), '\n')
  pcall(vim.cmd, 'stopinsert')
  if ok then
    vim.api.nvim_buf_call(b, function()
      vim.cmd('silent write')
    end)
  end
  local f = assert(io.open(env.NIB_E2E_OUT, 'w'))
  f:write(vim.json.encode(report))
  f:close()
  vim.cmd(ok and 'qall!' or 'cquit! 1')
end

-- A test must end: give up after 3 minutes whatever happens.
vim.defer_fn(function()
  finish(false, 'timed out')
end, 180000)

local orig_notify = vim.notify
vim.notify = function(msg, level, o)
  table.insert(report.messages, tostring(msg))
  return orig_notify(msg, level, o)
end

require('nib').setup({
  cmd = vim.json.decode(env.NIB_E2E_CMD),
  settings = { debounceMs = 20 },
})

local ns = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')

-- The partial-accept helpers, as data.
local nib = require('nib')
for _, case in ipairs({
  { nib.first_word, 'word_histogram(&text);', 'word_histogram' },
  { nib.first_word, '  .len()', '  .len' },
  { nib.first_line, 'a();\nb();', 'a();' },
  { nib.first_line, '\n    b();\n}', '\n    b();' },
}) do
  local got = case[1](case[2])
  if got ~= case[3] then
    report.ok = false
    finish(false, ('helper on %q gave %q, expected %q'):format(case[2], got, case[3]))
  end
end

local function poll(check, interval, then_do)
  local timer = vim.uv.new_timer()
  timer:start(interval, interval, vim.schedule_wrap(function()
    local ok, done = pcall(check)
    if not ok then
      timer:stop()
      finish(false, 'error: ' .. tostring(done))
    elseif done then
      timer:stop()
      then_do(done)
    end
  end))
end

-- 1. Open the other file first (it becomes context), then the file to edit.
if env.NIB_E2E_OTHER and env.NIB_E2E_OTHER ~= '' then
  vim.cmd('edit ' .. vim.fn.fnameescape(env.NIB_E2E_OTHER))
end
vim.cmd('edit ' .. vim.fn.fnameescape(env.NIB_E2E_FILE))
local buf = vim.api.nvim_get_current_buf()
edited = buf
local line = tonumber(env.NIB_E2E_LINE)
local before = vim.api.nvim_buf_get_lines(buf, line - 1, line, false)[1]

-- 2. Wait for the server to attach and its model to be ready.
poll(function()
  return #vim.lsp.get_clients({ bufnr = buf, name = 'nib' }) > 0
    and require('nib').status.state == 'ready'
end, 50, function()
  step('ready')
  -- 3. Type at the end of the line, as a user would (insert mode, one key at a time).
  vim.api.nvim_win_set_cursor(0, { line, #before })
  vim.api.nvim_feedkeys('A' .. env.NIB_E2E_TYPE, 'nt', false)
  -- 4. Wait for the ghost text.
  poll(function()
    local marks = vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
    if #marks == 0 then
      return false
    end
    local parts = {}
    for _, chunk in ipairs(marks[1][4].virt_text or {}) do
      table.insert(parts, chunk[1])
    end
    return table.concat(parts)
  end, 50, function(ghost)
    step('ghost text', { text = ghost })
    report.ghost = ghost
    -- 5. Accept it with the plugin's key, as typed (the mapping runs).
    local tab = vim.api.nvim_replace_termcodes('<Tab>', true, false, true)
    vim.api.nvim_feedkeys(tab, 'mt', false)
    poll(function()
      local now = vim.api.nvim_buf_get_lines(buf, line - 1, line, false)[1]
      return #now > #before + #env.NIB_E2E_TYPE and now
    end, 50, function(now)
      step('accepted', { line = now })
      -- :checkhealth nib must run and find the server and the model ready.
      local ok = pcall(vim.cmd, 'checkhealth nib')
      local health = ok and table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n') or ''
      report.health = health
      if not health:find('model: ', 1, true) or health:find('ERROR', 1, true) then
        return finish(false, 'checkhealth nib: ' .. health)
      end
      -- Let the accept command reach the server before leaving.
      vim.defer_fn(function()
        finish(true)
      end, 300)
    end)
  end)
end)
