using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace Broker.Testing;

/// <summary>
/// Starts this build's Broker.Server (the Broker.Server.dll beside the calling program) as a child process and waits
/// for the line it prints once it listens. Shared, as a linked source file, by the integration tests' crash and
/// configuration tests and by the perf runner, which both need a broker they can SIGKILL.
/// </summary>
internal static partial class BrokerChildProcess
{
    private static readonly TimeSpan ListenTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The dotnet host running this process (so children use the same SDK), else "dotnet" from PATH.</summary>
    public static string DotnetHost =>
        Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet";

    /// <summary>
    /// Starts the broker with <paramref name="arguments"/>; <paramref name="configure"/> may change its environment.
    /// Returns once it listens; if it exits first, fails with everything it printed. Its standard error goes to
    /// <paramref name="onStandardError"/> as well, and every line it prints (either stream) to <paramref name="onLine"/>.
    /// </summary>
    public static async Task<(Process Process, Uri Address)> StartAsync(IEnumerable<string> arguments,
        Action<ProcessStartInfo>? configure = null, Action<string>? onStandardError = null, Action<string>? onLine = null,
        string? serverDll = null)
    {
        serverDll ??= Path.Combine(AppContext.BaseDirectory, "Broker.Server.dll");
        var start = new ProcessStartInfo(DotnetHost)
        {
            ArgumentList = { serverDll },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);
        configure?.Invoke(start);
        var process = Process.Start(start) ?? throw new InvalidOperationException("could not start the broker process");
        var listening = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new StringBuilder();
        process.OutputDataReceived += (_, line) =>
        {
            if (line.Data is null)
            {
                // Wait for the exit (and the end of stderr) so the message carries everything the broker said.
                _ = Task.Run(() =>
                {
                    process.WaitForExit();
                    lock (output)
                        listening.TrySetException(new InvalidOperationException($"the broker exited before listening:\n{output}"));
                });
                return;
            }
            lock (output)
                output.AppendLine(line.Data);
            onLine?.Invoke(line.Data);
            if (ListeningLine().Match(line.Data) is { Success: true } match)
                listening.TrySetResult(new Uri(match.Groups[1].Value));
        };
        process.ErrorDataReceived += (_, line) =>
        {
            if (line.Data is null)
                return;
            lock (output)
                output.AppendLine(line.Data);
            onStandardError?.Invoke(line.Data);
            onLine?.Invoke(line.Data);
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            return (process, await listening.Task.WaitAsync(ListenTimeout));
        }
        catch
        {
            process.Kill(entireProcessTree: true);
            process.Dispose();
            throw;
        }
    }

    [GeneratedRegex(@"broker listening on (\S+)")]
    private static partial Regex ListeningLine();
}
