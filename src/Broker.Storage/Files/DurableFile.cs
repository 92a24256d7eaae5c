namespace Broker.Storage.Files;

/// <summary>Small files replaced whole, atomically and durably (metadata, scan starts, the broker's keys).</summary>
public static class DurableFile
{
    /// <summary>
    /// Replaces <paramref name="path"/> with what <paramref name="write"/> writes: into a temporary file, fsynced,
    /// renamed over the old one, then the folder fsynced (created first, durably, if missing). A reader never sees half a file, and after a power cut the
    /// file holds either the old content or the new one. <paramref name="ownerOnly"/> creates it readable by its owner
    /// alone (for secrets).
    /// </summary>
    public static void Replace(string path, Action<Stream> write, bool ownerOnly = false)
    {
        string full = Path.GetFullPath(path);
        DurableFolder.Create(Path.GetDirectoryName(full)!);
        string temporary = full + ".tmp";
        // A temporary file left by a crash keeps its mode when opened again, and the mode below applies only to a
        // new file: so it goes first, and the new one is created afresh (a secret never lands in a wider file).
        File.Delete(temporary);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (ownerOnly && !OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var file = new FileStream(temporary, options))
        {
            write(file);
            file.Flush(flushToDisk: true);
        }
        File.Move(temporary, full, overwrite: true);
        DurableFolder.Flush(Path.GetDirectoryName(full)!);
    }
}
