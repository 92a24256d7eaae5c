using System.Collections.Concurrent;
using System.Diagnostics;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests.Sdk;

/// <summary>
/// An example program (built before the tests by a project reference) as a child process, with its own environment;
/// every line it prints is kept, so a test awaits a line instead of sleeping.
/// </summary>
internal sealed class ExampleProcess : IDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private TaskCompletionSource _lineArrived = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ExampleProcess(string program, IReadOnlyDictionary<string, string> environment)
    {
        string dotnet = Broker.Testing.BrokerChildProcess.DotnetHost;
        var start = new ProcessStartInfo(dotnet)
        {
            ArgumentList = { ProgramPath(program) },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string inherited in start.Environment.Keys.Where(k => k.StartsWith("QUEUE_PLATFORM", StringComparison.Ordinal)).ToList())
            start.Environment.Remove(inherited);
        foreach (var (name, value) in environment)
            start.Environment[name] = value;
        _process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {program}");
        _process.OutputDataReceived += (_, line) => Add(line.Data);
        _process.ErrorDataReceived += (_, line) => Add(line.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>examples/NAME/bin/CONFIGURATION/TFM/NAME.dll, beside this test project's own bin/CONFIGURATION/TFM.</summary>
    private static string ProgramPath(string program)
    {
        string tests = Path.Combine("tests", "Broker.IntegrationTests", "bin") + Path.DirectorySeparatorChar;
        string path = Path.Combine(AppContext.BaseDirectory.Replace(tests, Path.Combine("examples", program, "bin") + Path.DirectorySeparatorChar, StringComparison.Ordinal), program + ".dll");
        return File.Exists(path) ? path : throw new FileNotFoundException($"the example {program} is not built at {path}");
    }

    public static ExampleProcess Start(string program, IReadOnlyDictionary<string, string> environment) => new(program, environment);

    public IReadOnlyList<string> Lines => [.. _lines];

    private void Add(string? line)
    {
        if (line is null)
            return;
        _lines.Enqueue(line);
        Interlocked.Exchange(ref _lineArrived, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    /// <summary>Waits for a printed line containing <paramref name="text"/>; fails with everything printed if the process exits or time runs out.</summary>
    public async Task<string> WaitForLineAsync(string text, TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        while (true)
        {
            var next = Volatile.Read(ref _lineArrived).Task;
            if (_lines.FirstOrDefault(line => line.Contains(text, StringComparison.Ordinal)) is { } found)
                return found;
            if (_process.HasExited)
            {
                _process.WaitForExit();   // until its output is read to the end
                if (_lines.FirstOrDefault(line => line.Contains(text, StringComparison.Ordinal)) is { } last)
                    return last;
                throw new InvalidOperationException($"the process exited ({_process.ExitCode}) before printing '{text}':\n{string.Join('\n', _lines)}");
            }
            try
            {
                await next.WaitAsync(TimeSpan.FromSeconds(1), deadline.Token);
            }
            catch (TimeoutException)
            {
                // Look again (and check whether the process exited).
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"no line '{text}' within {timeout}:\n{string.Join('\n', _lines)}");
            }
        }
    }

    /// <summary>SIGKILL: nothing of the program's shutdown runs.</summary>
    public void Kill()
    {
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
    }

    /// <summary>SIGTERM, then waits for the exit; returns the exit code.</summary>
    public async Task<int> TerminateAsync(TimeSpan timeout)
    {
        ProcessSignals.Terminate(_process);
        using var deadline = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(deadline.Token);
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
            Kill();
        _process.Dispose();
    }
}
