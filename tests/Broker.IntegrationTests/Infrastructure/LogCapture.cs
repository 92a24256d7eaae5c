using Microsoft.Extensions.Logging;
using System.Collections.Concurrent;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>Keeps every log entry of warning level or above the broker writes, so a test can assert none is an error.</summary>
public sealed class LogCapture : ILoggerProvider
{
    private readonly ConcurrentQueue<(LogLevel Level, string Category, string Message, Exception? Error)> _entries = new();

    public IReadOnlyList<string> Errors =>
        _entries.Where(e => e.Level >= LogLevel.Error).Select(e => $"{e.Level} {e.Category}: {e.Message} {e.Error}").ToList();

    /// <summary>Every entry kept (warning and above), as text.</summary>
    public IReadOnlyList<string> All =>
        _entries.Select(e => $"{e.Level} {e.Category}: {e.Message} {e.Error}").ToList();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(LogCapture capture, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
                capture._entries.Enqueue((logLevel, category, formatter(state, exception), exception));
        }
    }
}
