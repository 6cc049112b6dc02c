--- `:checkhealth nib`: the Neovim version, the server binary, the model's state.
local M = {}

function M.check()
  local health = vim.health
  health.start('nib')
  if vim.lsp and vim.lsp.inline_completion then
    health.ok('Neovim has vim.lsp.inline_completion (' .. tostring(vim.version()) .. ')')
  else
    health.error('Neovim 0.12 or newer is needed (vim.lsp.inline_completion is missing)')
  end
  local nib = require('nib')
  local cmd = (nib.options or nib.defaults).cmd
  if vim.fn.executable(cmd[1]) == 1 then
    health.ok('server: ' .. vim.fn.exepath(cmd[1]))
  else
    health.error('server `' .. cmd[1] .. '` not found', {
      'build it with `cargo build --release -p nib-lsp` and put target/release/nib on PATH',
      'or set `cmd` in require("nib").setup{}',
    })
  end
  if not nib.options then
    health.warn('require("nib").setup{} has not been called')
  end
  local st = nib.status
  if st.state == 'ready' then
    health.ok('model: ' .. tostring(st.message))
    if type(st.kernels) == 'string' then
      health.info('kernels: ' .. st.kernels .. ' (set NIB_KERNELS to force another path)')
    end
  elseif st.state == 'error' then
    health.error('model: ' .. tostring(st.message), { 'fetch the default model with `nib model pull`' })
  else
    health.info('model: ' .. st.state .. ' (' .. tostring(st.message) .. ')')
  end
end

return M
